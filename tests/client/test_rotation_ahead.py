"""A key rotation that does not drain the send window (client/sealing.py),
against a real node over CURVE: the next epoch's messages are sealed while
its `new_epoch` is on the way and sent only once the node took it; an
epoch the node refuses, or an earlier send it refuses meanwhile, sends
nothing sealed under the new key, and order and exactly-once hold."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from client.test_pipeline import check_exactly_once, texts, wait_all

from curvechat.client import events as ev
from curvechat.client import sealing
from curvechat.client.engine import ChatClient
from curvechat.client.errors import ServerRefused
from curvechat.protocol import ErrorCode, LocalProtocolError
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.servers import ServerProcess


class Wire:
    """What a client's connection sent, in order: each `new_epoch` (with
    its answer) and the epoch of each send; and every seal, with whether
    the `new_epoch` of its epoch was still unanswered then."""

    def __init__(self, client: ChatClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: dict[int, asyncio.Future[m.AnyReply]] = {}  # epoch -> its new_epoch's answer
        self.sends: list[tuple[int, bool]] = []  # (epoch, its new_epoch answered by then)
        self.seals: list[tuple[int, bool]] = []  # (epoch, sealed ahead of its new_epoch's answer)
        self.refuse_epochs = 0  # new_epoch requests to refuse here, unsent
        self.epoch_refusal: Exception = ServerRefused(
            ErrorCode.CONFLICT, "another member started this epoch"
        )
        self.fail_seal_once: set[str] = set()  # texts whose first seal fails, for a moment
        self.refuse_sends: set[int] = set()  # sends (by number, from 1) to refuse here, unsent
        self.refused: list[str] = []
        conn = client.conn
        real = conn.submit

        def submit(req: m.AnyRequest, timeout: float | None = None) -> asyncio.Future[m.AnyReply]:
            loop = asyncio.get_running_loop()
            if isinstance(req, m.NewEpoch) and self.refuse_epochs:
                self.refuse_epochs -= 1
                fut: asyncio.Future[m.AnyReply] = loop.create_future()
                loop.call_later(0.02, fut.set_exception, self.epoch_refusal)
                self.refused.append(f"epoch {req.epoch.epoch}")
                return fut
            if isinstance(req, m.Send):
                epoch = req.envelope.epoch
                answer = self.made.get(epoch)
                self.sends.append((epoch, answer is None or answer.done()))
                if len(self.sends) in self.refuse_sends:
                    self.refused.append(req.envelope.txn)
                    fut = loop.create_future()
                    fut.set_exception(ServerRefused(ErrorCode.RATE_LIMITED, "refused by the test"))
                    return fut
            fut = real(req, timeout)
            if isinstance(req, m.NewEpoch):
                self.made[req.epoch.epoch] = fut
            return fut

        conn.submit = submit  # type: ignore[method-assign]
        conn.submit_sends = lambda reqs, timeout=None: [submit(r, timeout) for r in reqs]  # type: ignore[method-assign]
        seal = sealing.seal_message

        def recording_seal(identity: Any, **kw: Any) -> m.Envelope:
            text = kw["plaintext"].text
            if text in self.fail_seal_once:
                self.fail_seal_once.discard(text)
                raise LocalProtocolError(ErrorCode.BAD_FRAME, "failed once, by the test")
            answer = self.made.get(kw["epoch"])
            self.seals.append((kw["epoch"], answer is not None and not answer.done()))
            return seal(identity, **kw)

        monkeypatch.setattr(sealing, "seal_message", recording_seal)


async def test_the_next_epoch_is_sealed_while_its_new_epoch_is_on_the_way(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, events = await clients.make("alice", server.connect, rotate_after_messages=50)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("ahead", ["bob"])
    wire = Wire(alice, monkeypatch)
    sent = [f"a{i:03d}" for i in range(400)]
    txns = alice.outbox.queue_many("ahead", sent)
    await wait_all(alice, txns)
    check_exactly_once(alice, events, "ahead", sent, txns)
    assert len(wire.made) >= 6, "the epochs were not made on the way"
    ahead = {epoch for epoch, early in wire.seals if early}
    assert ahead, "no message was sealed while its epoch's new_epoch was on the way"
    # Nothing went out under an epoch before the node took it.
    assert all(answered for _, answered in wire.sends)
    assert len(wire.sends) == 400  # none refused, none sent twice
    assert max(Counter(epoch for epoch, _ in wire.sends).values()) <= 50
    await bob_events.until(lambda: len(texts(bob, "ahead")) == 400)
    check_exactly_once(bob, bob_events, "ahead", sent, txns)
    assert all(r.error is None for r in bob.cache.messages("ahead", limit=1000))


async def test_messages_sealed_under_a_refused_epoch_are_never_sent(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, events = await clients.make("alice", server.connect, rotate_after_messages=50)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("refused", ["bob"])
    wire = Wire(alice, monkeypatch)
    wire.refuse_epochs = 2
    sent = [f"r{i:03d}" for i in range(200)]
    txns = alice.outbox.queue_many("refused", sent)
    await wait_all(alice, txns)
    assert len(wire.refused) == 2
    assert any(early for _, early in wire.seals), "nothing was sealed ahead"
    check_exactly_once(alice, events, "refused", sent, txns)
    await bob_events.until(lambda: len(texts(bob, "refused")) == 200)
    check_exactly_once(bob, bob_events, "refused", sent, txns)
    # Every message bob has opens: none was sent under a key the node did not take.
    assert all(r.error is None for r in bob.cache.messages("refused", limit=1000))


async def test_an_old_epoch_send_refused_while_the_next_is_made_keeps_the_order(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last send of an epoch is refused for a passing reason while the
    next epoch is on its way: what was sealed under the next one waits, and
    the outbox resends from the refused send, in order."""
    alice, events = await clients.make("alice", server.connect, rotate_after_messages=50)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("order", ["bob"])
    wire = Wire(alice, monkeypatch)
    wire.refuse_sends = {50, 150}
    sent = [f"o{i:03d}" for i in range(300)]
    txns = alice.outbox.queue_many("order", sent)
    await wait_all(alice, txns)
    assert len(wire.refused) == 2
    check_exactly_once(alice, events, "order", sent, txns)
    await bob_events.until(lambda: len(texts(bob, "order")) == 300)
    check_exactly_once(bob, bob_events, "order", sent, txns)


async def test_a_message_that_failed_to_seal_ahead_keeps_its_place_when_the_rest_wait(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last send of an epoch is refused while the next epoch is made, and
    a message after some sealed ahead fails to seal (for a moment): all of
    them wait for the window to drain and go out again in the user's order."""
    alice, events = await clients.make("alice", server.connect, rotate_after_messages=50)
    await alice.create_room("place", [])
    wire = Wire(alice, monkeypatch)
    wire.refuse_sends = {50}
    sent = [f"p{i:03d}" for i in range(120)]
    wire.fail_seal_once = {"p055"}
    txns = alice.outbox.queue_many("place", sent)
    acks = await wait_all(alice, txns)
    assert not wire.fail_seal_once and len(wire.refused) == 1
    assert [a.seq for a in acks] == list(range(1, 121))
    check_exactly_once(alice, events, "place", sent, txns)


async def test_an_epoch_too_large_to_send_fails_its_messages_and_stalls_nothing(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `new_epoch` the client cannot send (too large: a room of many
    hundreds of members) fails the messages that needed it, one at a time,
    as before; the sends in flight are still taken and nothing else waits."""
    alice, events = await clients.make("alice", server.connect, rotate_after_messages=10)
    await alice.create_room("huge", [])
    await alice.create_room("other", [])
    wire = Wire(alice, monkeypatch)
    wire.refuse_epochs = 1000
    wire.epoch_refusal = LocalProtocolError(ErrorCode.TOO_LARGE, "frame too large")
    txns = alice.outbox.queue_many("huge", [f"h{i:02d}" for i in range(30)])
    other = alice.outbox.queue_many("other", ["after them"])
    acked = failed = 0
    for txn in txns:
        try:
            await alice.wait_ack(txn, 30)
            acked += 1
        except ServerRefused as exc:
            assert exc.code == ErrorCode.TOO_LARGE
            failed += 1
    assert acked == 10 and failed == 20
    await alice.wait_ack(other[0], 30)
    assert alice.pending() == []
    assert [e.txn for e in events.of(ev.SendFailed)] == txns[10:]
