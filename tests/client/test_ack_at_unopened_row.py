"""An ack at a seq whose row has not opened here but claims to be the send
(another process of this home sent it under a key this one does not hold
yet): the send stays queued and goes again (the server keeps it once); it
is neither failed as a false ack nor stored twice. A row that keeps
claiming it without opening fails the send after a few tries."""

from __future__ import annotations

import math
from typing import Any

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient

from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess


async def _sent_at_a_row_that_claims_it(
    server: ServerProcess, clients: ClientFactory, claims: float
) -> tuple[ChatClient, Recorder, str, list[int]]:
    """alice sends "hello" in a room of her own; the first `claims`
    judgements of its ack find at its seq a row that has not opened here
    and claims to be it. Returns the engine, its events, the send's txn and
    the seqs each judgement was asked about."""
    alice, events = await clients.make("alice", server.connect)
    await alice.create_room("r", [])
    real = alice.cache.holders
    judged: list[int] = []

    def holders(room: str, seqs: Any) -> dict[int, tuple[str, str, str]]:
        if room != "r":
            return real(room, seqs)
        judged.extend(seqs)
        if len(judged) > claims:
            return real(room, seqs)
        return {s: ("alice", txn, "waits") for s in seqs}

    alice.cache.holders = holders  # type: ignore[method-assign]
    txn = alice.queue("r", "hello")
    return alice, events, txn, judged


async def test_the_send_waits_for_the_row_to_open_and_is_acked_once(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, events, txn, judged = await _sent_at_a_row_that_claims_it(server, clients, 1)
    await events.until(lambda: bool(events.of(ev.SendAcked) or events.of(ev.SendFailed)), 20)
    assert judged, "the ack was not judged"
    assert events.of(ev.SendFailed) == []
    assert [e.txn for e in events.of(ev.SendAcked)] == [txn]
    rows = alice.cache.messages("r")
    assert [(r.seq, r.text) for r in rows] == [(judged[0], "hello")]
    assert alice.pending() == []


async def test_a_row_that_never_opens_fails_the_send_after_a_few_tries(
    server: ServerProcess, clients: ClientFactory
) -> None:
    _, events, txn, judged = await _sent_at_a_row_that_claims_it(server, clients, math.inf)
    await events.until(lambda: bool(events.of(ev.SendFailed)), 30)
    assert [(e.txn, e.code) for e in events.of(ev.SendFailed)] == [(txn, "bad_ack")]
    assert events.of(ev.SendAcked) == [] and len(judged) == 4
