"""A malicious server against the client's outbox and acks (pipelined sends):
acks that do not match what was sent, pushes racing acks, reconnects in the
middle of a window, `sends` frames answered in part. Each test is one attack;
`ackmitm.Mitm` rewrites what the victim's socket delivers, over a real node."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import msgspec
import pytest

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient
from curvechat.protocol import messages as m

from .ackmitm import Mitm
from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess

Alone = tuple[ChatClient, Recorder, Mitm]


@pytest.fixture
async def alone(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> Alone:
    """alice in room "r" on her own, what her socket gets passing through a
    man in the middle."""
    alice, events = await clients.make("alice", server.connect)
    await alice.create_room("r", [])
    return alice, events, Mitm(monkeypatch, alice)


def rows(client: ChatClient, room: str) -> list[tuple[int, str, str | None, str | None]]:
    return [(r.seq, r.txn, r.text, r.error) for r in client.cache.messages(room, limit=10_000)]


def shown_counts(events: Recorder, room: str) -> Counter[int]:
    return Counter(e.message.seq for e in events.of(ev.MessageReceived) if e.message.room == room)


async def settled(events: Recorder, txns: list[str], timeout: float = 20.0) -> None:
    def done() -> bool:
        answered = {e.txn for e in events.of(ev.SendAcked)} | {
            e.txn for e in events.of(ev.SendFailed)
        }
        return set(txns) <= answered

    await events.until(done, timeout)


async def test_acks_out_of_seq_order_in_one_batch_show_each_message_once(alone: Alone) -> None:
    """Two sends in flight; the server acks them together (one `batch`),
    the later send at the lower free seq. Each is stored once and told to
    the front end once (the lower one was told twice)."""
    alice, events, mitm = alone

    def swap(held: list[tuple[int, m.SendAck]]) -> None:
        (r1, a1), (r2, a2) = held
        swapped: list[tuple[int, m.AnyReply]] = [
            (r1, msgspec.structs.replace(a1, seq=a2.seq)),
            (r2, msgspec.structs.replace(a2, seq=a1.seq)),
        ]
        asyncio.get_running_loop().call_soon(mitm.release, swapped)

    mitm.hold_acks(2, swap)
    txns = alice.queue_many("r", ["first", "second"])
    await settled(events, txns)
    assert [e.txn for e in events.of(ev.SendFailed)] == []
    assert rows(alice, "r") == [(1, txns[1], "second", None), (2, txns[0], "first", None)]
    # Every cached row is told to the front end once (check_exactly_once in
    # tests/client/test_pipeline.py).
    assert shown_counts(events, "r") == {1: 1, 2: 1}, shown_counts(events, "r")


def capture_envelopes(client: ChatClient) -> dict[str, m.Envelope]:
    """txn -> the envelope of the client's last send of it (what the node got)."""
    sent: dict[str, m.Envelope] = {}
    conn = client.conn
    real_submit, real_sends = conn.submit, conn.submit_sends

    def submit(req: m.AnyRequest, timeout: float | None = None):  # type: ignore[no-untyped-def]
        if isinstance(req, m.Send):
            sent[req.envelope.txn] = req.envelope
        return real_submit(req, timeout)

    def submit_sends(reqs, timeout=None):  # type: ignore[no-untyped-def]
        for req in reqs:
            sent[req.envelope.txn] = req.envelope
        return real_sends(reqs, timeout)

    conn.submit = submit
    conn.submit_sends = submit_sends
    return sent


async def test_an_ack_at_another_row_for_a_send_a_push_brought_in_changes_nothing(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob's message is at seq 1. alice sends; the node stores it at 2. The
    server pushes alice's own envelope back at seq 2 (where it is), then
    acks the send as seq 1 (bob's). A2: an ack for a send a push already
    brought in stores and shows nothing more (it failed the send with
    bad_ack, while it showed the same message as stored at 2)."""
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await bob_events.until(lambda: "r" in [r.room for r in bob.rooms()])
    await bob.send("r", "from bob", timeout=10)
    await events.until(lambda: [r[2] for r in rows(alice, "r")] == ["from bob"])
    envs = capture_envelopes(alice)
    mitm = Mitm(monkeypatch, alice)

    async def echo_then_ack(rid: int, ack: m.SendAck) -> None:
        stored = m.StoredMessage(seq=ack.seq, ts=ack.ts, envelope=envs[ack.txn])
        mitm.push(m.MessagePush(room="r", message=stored))
        await events.until(
            lambda: any(e.message.seq == ack.seq for e in events.of(ev.MessageReceived))
        )
        mitm.release([(rid, msgspec.structs.replace(ack, seq=1))])

    def hook(rid: int, ack: m.SendAck) -> list[tuple[int, m.AnyReply]]:
        asyncio.get_running_loop().create_task(echo_then_ack(rid, ack))
        return []

    mitm.on_acks(hook)
    txn = alice.queue("r", "from alice")
    await settled(events, [txn])
    assert rows(alice, "r") == [
        (1, bob_rows_txn(bob), "from bob", None),
        (2, txn, "from alice", None),
    ]
    mine = [e for e in events.of(ev.MessageReceived) if e.message.txn == txn]
    assert [e.message.seq for e in mine] == [2]  # shown as stored, at 2
    failed = [(e.txn, e.code) for e in events.of(ev.SendFailed)]
    assert failed == [], f"a send shown as stored at 2 was failed: {failed}"


def bob_rows_txn(bob: ChatClient) -> str:
    return bob.cache.messages("r")[0].txn


async def test_resends_after_a_reconnect_acked_at_each_others_seqs_change_nothing(
    alone: Alone,
) -> None:
    """Four sends in flight; the node commits them all (1..4); the server
    delivers the acks of 1 and 2 and drops the connection. After the
    reconnect its sync brings 3 and 4 back (they are alice's, shown at 3 and
    4); then it answers the resends of 3 and 4 with each other's seq. A2:
    neither is failed (both were, with bad_ack, though the client held and
    showed both as stored)."""
    alice, events, mitm = alone
    phase = {"cut": False}

    def hook(rid: int, msg: m.AnyReply) -> list[tuple[int, m.AnyReply]]:
        if not isinstance(msg, m.SendAck):
            return [(rid, msg)]
        if not phase["cut"]:
            if msg.seq <= 2:
                return [(rid, msg)]
            mitm.held.append((rid, msg))
            if len(mitm.held) == 2:
                phase["cut"] = True
                alice.conn.drop("cut by the malicious server")
            return []
        # the resends, after the reconnect: each at the other's seq
        other = {3: 4, 4: 3}.get(msg.seq, msg.seq)
        return [(rid, msgspec.structs.replace(msg, seq=other))]

    mitm.hook = hook
    txns = alice.queue_many("r", ["m1", "m2", "m3", "m4"])
    await settled(events, txns, timeout=30)
    assert [r[:3] for r in rows(alice, "r")] == [
        (1, txns[0], "m1"),
        (2, txns[1], "m2"),
        (3, txns[2], "m3"),
        (4, txns[3], "m4"),
    ]
    assert alice.pending() == []
    failed = [(e.txn, e.code) for e in events.of(ev.SendFailed)]
    assert failed == [], f"sends the client holds as stored were failed: {failed}"


# --- what held -------------------------------------------------------------------------


async def _room_with_bob_message(clients: ClientFactory, server: ServerProcess):  # type: ignore[no-untyped-def]
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.create_room("other", ["bob"])
    await bob_events.until(lambda: {"r", "other"} <= {r.room for r in bob.rooms()})
    await bob.send("r", "from bob", timeout=10)
    await events.until(lambda: [r[2] for r in rows(alice, "r")] == ["from bob"])
    return alice, events


LIES = {
    "other_room": lambda a: msgspec.structs.replace(a, room="other"),
    "other_txn": lambda a: msgspec.structs.replace(a, txn=a.txn[:-1] + "X"),
    "seq_of_bobs_message": lambda a: msgspec.structs.replace(a, seq=1),
}


@pytest.mark.parametrize("lie", sorted(LIES))
async def test_an_ack_that_cannot_be_true_fails_the_send_and_changes_nothing(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch, lie: str
) -> None:
    alice, events = await _room_with_bob_message(clients, server)
    before = rows(alice, "r")
    mitm = Mitm(monkeypatch, alice)
    mitm.on_acks(lambda rid, ack: [(rid, LIES[lie](ack))])
    txn = alice.queue("r", "from alice")
    await settled(events, [txn])
    assert [(e.txn, e.code) for e in events.of(ev.SendFailed)] == [(txn, "bad_ack")]
    assert rows(alice, "r") == before and rows(alice, "other") == []
    assert alice.pending() == [] and alice.status.state.name == "LIVE"


async def test_duplicate_flag_absurd_ts_and_an_ack_delivered_twice_are_harmless(
    alone: Alone,
) -> None:
    alice, events, mitm = alone

    def hook(rid: int, ack: m.SendAck) -> list[tuple[int, m.AnyReply]]:
        lie = msgspec.structs.replace(ack, duplicate=True, ts=2**53)
        return [(rid, lie), (rid, lie)]

    mitm.on_acks(hook)
    txns = alice.queue_many("r", ["a", "b", "c"])
    await settled(events, txns)
    assert [e.txn for e in events.of(ev.SendAcked)] == txns
    assert [r[:3] for r in rows(alice, "r")] == [
        (i + 1, t, x) for i, (t, x) in enumerate(zip(txns, "abc", strict=True))
    ]
    assert shown_counts(events, "r") == {1: 1, 2: 1, 3: 1}


async def test_acks_of_a_window_delivered_last_first_are_taken_in_order(alone: Alone) -> None:
    alice, events, mitm = alone
    n = 20

    def last_first(held: list[tuple[int, m.SendAck]]) -> None:
        loop = asyncio.get_running_loop()
        for i, pair in enumerate(reversed(held)):  # one per turn of the loop, last first
            loop.call_later(0.01 * i, mitm.release, [pair])

    mitm.hold_acks(n, last_first)
    texts = [f"t{i}" for i in range(n)]
    txns = alice.queue_many("r", texts)
    await settled(events, txns)
    assert [e.txn for e in events.of(ev.SendAcked)] == txns
    assert [r[2] for r in rows(alice, "r")] == texts
    assert shown_counts(events, "r") == {i: 1 for i in range(1, n + 1)}


async def test_an_ack_for_a_send_never_made_is_ignored_and_one_under_anothers_rid_fails_that_one(
    alone: Alone,
) -> None:
    alice, events, mitm = alone

    def hook(rid: int, ack: m.SendAck) -> list[tuple[int, m.AnyReply]]:
        ghost = m.SendAck(room="r", txn="x" * 34, seq=ack.seq + 100, ts=ack.ts)
        return [(10**9, ghost), (rid, ack)]

    mitm.on_acks(hook)
    txns = alice.queue_many("r", ["a", "b"])
    await settled(events, txns)
    assert [r[:3] for r in rows(alice, "r")] == [(1, txns[0], "a"), (2, txns[1], "b")]


def _first_of_frame(client: ChatClient, rid: int) -> tuple[bool, int]:
    frames = client.conn._sock._pending._frames
    where = frames.get(rid)
    return (where is not None and where[1] == 0), (0 if where is None else len(where[0]))


Reply = list[tuple[int, m.AnyReply]]


def at_a_frames_first_ack(
    mitm: Mitm, client: ChatClient, answer: Callable[[int, m.SendAck], Reply]
) -> list[int]:
    """Have `answer(rid, ack)` stand for the ack of the first send of the
    first `sends` frame of more than one; returns that frame's size, once
    it came."""
    seen: list[int] = []

    def hook(rid: int, ack: m.SendAck) -> Reply:
        first, size = _first_of_frame(client, rid)
        if first and size > 1 and not seen:
            seen.append(size)
            return answer(rid, ack)
        return [(rid, ack)]

    mitm.on_acks(hook)
    return seen


async def test_a_sends_frame_answered_but_for_its_first_send_resends_it_once(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, events = await clients.make("alice", server.connect, request_timeout=2.0)
    await alice.create_room("r", [])
    dropped = at_a_frames_first_ack(Mitm(monkeypatch, alice), alice, lambda rid, ack: [])
    texts = [f"f{i}" for i in range(8)]
    txns = alice.queue_many("r", texts)
    await settled(events, txns, timeout=30)
    assert dropped, "no sends frame"
    assert [e.txn for e in events.of(ev.SendFailed)] == []
    assert [r[2] for r in rows(alice, "r")] == texts
    assert alice.pending() == []


@pytest.mark.parametrize("code", ["rate_limited", "internal", "bad_frame"])
async def test_an_error_for_a_sends_frames_first_rid_only(
    server: ServerProcess,
    clients: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
) -> None:
    alice, events = await clients.make("alice", server.connect, request_timeout=2.0)
    await alice.create_room("r", [])
    refused = at_a_frames_first_ack(
        Mitm(monkeypatch, alice),
        alice,
        lambda rid, ack: [(rid, m.Error(code=code, message="first only"))],
    )
    texts = [f"e{i}" for i in range(8)]
    txns = alice.queue_many("r", texts)
    await settled(events, txns, timeout=30)
    assert refused
    failed = [e.txn for e in events.of(ev.SendFailed)]
    if code == "bad_frame":  # the frame's refusal stands for all its sends (protocol.md)
        assert failed == txns[: refused[0]]
        # The node stored them all: they come back as alice's at the next sync.
        alice.conn.drop("test: resync")
        await events.until(lambda: [r[2] for r in rows(alice, "r")] == texts, 20)
    else:
        assert failed == []
        assert [r[2] for r in rows(alice, "r")] == texts
    assert alice.pending() == []


async def test_a_push_of_bobs_message_ahead_of_an_ack_at_its_seq_in_one_frame(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server puts bob's message at seq 2 (a push) and, right behind it
    in the same frame, acks alice's send as seq 2 too. Held: the worker
    stores the push first, and A1 fails the send (bad_ack) instead of
    hiding bob's message. (Were the push to need a refresh first, the ack
    would win: the limit of docs/security.md 6.7.)"""
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await bob_events.until(lambda: "r" in [r.room for r in bob.rooms()])
    await bob.send("r", "bob one", timeout=10)
    await events.until(lambda: len(rows(alice, "r")) == 1)
    mitm = Mitm(monkeypatch, alice)
    held_push: list[m.MessagePush] = []

    def hook(rid: int, msg: m.AnyReply) -> list[tuple[int, m.AnyReply]]:
        if isinstance(msg, m.MessagePush) and msg.room == "r" and not held_push:
            held_push.append(msg)  # bob's second message, stored at 2
            return []
        if isinstance(msg, m.SendAck) and held_push:
            push = held_push[0]
            return [(0, push), (rid, msgspec.structs.replace(msg, seq=push.message.seq))]
        return [(rid, msg)]

    mitm.hook = hook
    await bob.send("r", "bob two", timeout=10)
    await asyncio.sleep(0.3)
    assert held_push
    txn = alice.queue("r", "alice")
    await settled(events, [txn])
    await asyncio.sleep(0.5)
    got = {seq: (txn_, text) for seq, txn_, text, _ in rows(alice, "r")}
    assert got[2][1] == "bob two", got
    assert [(e.txn, e.code) for e in events.of(ev.SendFailed)] == [(txn, "bad_ack")]


async def test_every_send_refused_stale_costs_rotations_then_fails(alone: Alone) -> None:
    """Not an ack, but the other answer a send gets: the server answers
    every send stale_epoch. Each queued message is failed after STALE_TRIES,
    with a clear code; the client rotates once on the way (the room's log
    did not change), not once per refusal (twelve for three messages)."""
    alice, events, mitm = alone
    mitm.on_acks(lambda rid, ack: [(rid, m.Error(code="stale_epoch", message="lie"))])
    epoch0 = alice.rooms()[0].epoch
    txns = alice.queue_many("r", ["s1", "s2", "s3"])
    await settled(events, txns, timeout=60)
    assert [(e.txn, e.code) for e in events.of(ev.SendFailed)] == [(t, "stale_epoch") for t in txns]
    rotations = alice.rooms()[0].epoch - epoch0
    assert alice.pending() == [] and alice.status.state.name == "LIVE"
    assert rotations == 1


async def test_an_ack_at_a_free_seq_then_bobs_push_there_hides_bobs_message(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reverse order: alice's send is acked at 2 (free here; the node
    holds bob's message there), then bob's push at 2 comes and is ignored
    as known. The documented limit (security.md 6.7), recorded as is:
    alice's client shows her message at a seq where everyone else sees bob's."""
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await bob_events.until(lambda: "r" in [r.room for r in bob.rooms()])
    mitm = Mitm(monkeypatch, alice)
    held: list[m.MessagePush] = []
    mitm.hook = lambda rid, msg: (
        (held.append(msg) or [])
        if isinstance(msg, m.MessagePush) and not held
        else [(rid, msgspec.structs.replace(msg, seq=1) if isinstance(msg, m.SendAck) else msg)]
    )
    await bob.send("r", "bob at 1", timeout=10)
    await asyncio.sleep(0.3)
    assert held
    txn = alice.queue("r", "alice")
    await settled(events, [txn])
    mitm.push(held[0])
    await asyncio.sleep(0.5)
    assert rows(alice, "r")[0][2] == "alice"  # bob's message at 1 never shown here
