"""Pipelined sends and batched cache writes against a real node over CURVE:
order and exactly-once kept with a window of sends in flight, across a lost
connection and a node killed mid-window; a burst of pushes and a catch-up
page each written in one cache transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient
from curvechat.client.errors import ServerRefused
from curvechat.client.state import ConnState
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m

from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess


def texts(client: ChatClient, room: str) -> list[str | None]:
    return [msg.text for msg in client.cache.messages(room, limit=10_000)]


class InFlight:
    """Wraps a client's connection: the most `send` requests it had in flight,
    and a hook called as each send goes out (with how many went out before
    it and how many of those are still unanswered)."""

    def __init__(
        self, client: ChatClient, on_send: Callable[[int, int], None] | None = None
    ) -> None:
        self.now = 0
        self.most = 0
        self.issued = 0
        conn = client.conn
        real = conn.submit

        def submit(req: m.AnyRequest, timeout: float | None = None) -> asyncio.Future[m.AnyReply]:
            if not isinstance(req, m.Send):
                return real(req, timeout)
            if on_send is not None:
                on_send(self.issued, self.now)
            self.issued += 1
            self.now += 1
            self.most = max(self.most, self.now)
            fut = real(req, timeout)
            fut.add_done_callback(self._answered)
            return fut

        conn.submit = submit  # type: ignore[method-assign]
        conn.submit_sends = lambda reqs, timeout=None: [submit(r, timeout) for r in reqs]  # type: ignore[method-assign]

    def _answered(self, _: asyncio.Future[m.AnyReply]) -> None:
        self.now -= 1


class Transactions:
    """Counts the cache's transactions that wrote messages (SQLite's own trace)."""

    def __init__(self, client: ChatClient) -> None:
        self.writes: list[int] = []  # message rows written, per committed transaction
        self._open: int | None = None
        client.cache._db.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql.startswith("BEGIN"):
            self._open = 0
        elif sql.startswith("INSERT OR IGNORE INTO messages"):
            if self._open is None:
                self.writes.append(1)  # outside a transaction: one commit of its own
            else:
                self._open += 1
        elif sql.startswith(("COMMIT", "ROLLBACK")):
            if sql.startswith("COMMIT") and self._open:
                self.writes.append(self._open)
            self._open = None


def check_exactly_once(
    client: ChatClient, events: Recorder, room: str, sent: list[str], txns: list[str]
) -> None:
    rows = client.cache.messages(room, limit=10_000)
    assert [r.text for r in rows] == sent
    assert [r.seq for r in rows] == list(range(1, len(sent) + 1))
    assert [r.txn for r in rows] == txns
    if client.me == rows[0].sender:
        acked = [e.txn for e in events.of(ev.SendAcked)]
        assert sorted(acked) == sorted(txns)  # each acked once
    shown = [e.message.seq for e in events.of(ev.MessageReceived) if e.message.room == room]
    assert sorted(shown) == list(range(1, len(sent) + 1))  # each shown once
    assert client.pending() == []


async def wait_all(client: ChatClient, txns: list[str]) -> list[m.SendAck]:
    return [await client.wait_ack(t, 60) for t in txns]


async def test_pipelined_sends_keep_order_and_are_stored_once(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, events = await clients.make("alice", server.connect, rotate_after_messages=50)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("pipe", ["bob"])
    flight = InFlight(alice)
    sent = [f"p{i:03d}" for i in range(300)]
    txns = alice.outbox.queue_many("pipe", sent[:150])
    txns += [alice.queue("pipe", text) for text in sent[150:]]
    acks = await wait_all(alice, txns)
    assert [a.seq for a in acks] == list(range(1, 301))
    assert flight.most > 1, "the sends were not pipelined"
    check_exactly_once(alice, events, "pipe", sent, txns)
    await bob_events.until(lambda: len(texts(bob, "pipe")) == 300)
    check_exactly_once(bob, bob_events, "pipe", sent, txns)
    assert all(r.error is None for r in bob.cache.messages("pipe", limit=1000))
    assert alice.rooms()[0].epoch is not None and alice.rooms()[0].epoch >= 5  # rotated on the way


async def test_a_connection_lost_mid_window_resends_in_order_once(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("cut", ["bob"])
    cut: list[int] = []

    def cut_mid_window(issued: int, unanswered: int) -> None:
        # the 150th send or later, while earlier ones are still unanswered
        if issued >= 150 and unanswered > 0 and not cut:
            cut.append(unanswered)
            alice.conn.drop("cut by the test")

    InFlight(alice, cut_mid_window)
    sent = [f"c{i:03d}" for i in range(400)]
    txns = alice.outbox.queue_many("cut", sent)
    await wait_all(alice, txns)
    assert cut, "the connection was never cut with sends in flight"
    assert alice.conn.reconnects >= 1
    check_exactly_once(alice, events, "cut", sent, txns)
    await bob_events.until(lambda: len(texts(bob, "cut")) == 400)
    check_exactly_once(bob, bob_events, "cut", sent, txns)
    reply = await alice.conn.request(m.History(room="cut", after=0, limit=500))
    assert isinstance(reply, m.Messages) and [i.seq for i in reply.items] == list(range(1, 401))


async def test_a_send_refused_mid_window_leaves_no_later_one_stored_ahead(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A send refused for a passing reason (here: rate_limited, as a busy node
    answers) while later ones are in flight: the later ones name it as their
    predecessor, so the node refuses them (out_of_order) instead of storing
    them ahead of it, and the outbox resends from the refused one, in order."""
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("gap", ["bob"])
    conn = alice.conn
    real = conn.submit
    refused: list[str] = []
    out_of_order: list[str] = []
    issued = 0

    def submit(req: m.AnyRequest, timeout: float | None = None) -> asyncio.Future[m.AnyReply]:
        nonlocal issued
        if not isinstance(req, m.Send):
            return real(req, timeout)
        issued += 1
        if issued in (60, 140):  # twice, each time with sends in flight behind it
            refused.append(req.envelope.txn)
            fut: asyncio.Future[m.AnyReply] = asyncio.get_running_loop().create_future()
            fut.set_exception(ServerRefused(ErrorCode.RATE_LIMITED, "refused by the test"))
            return fut
        txn = req.envelope.txn

        def answered(f: asyncio.Future[m.AnyReply]) -> None:
            exc = None if f.cancelled() else f.exception()
            if isinstance(exc, ServerRefused) and exc.code == ErrorCode.OUT_OF_ORDER:
                out_of_order.append(txn)

        fut = real(req, timeout)
        fut.add_done_callback(answered)
        return fut

    conn.submit = submit  # type: ignore[method-assign]
    conn.submit_sends = lambda reqs, timeout=None: [submit(r, timeout) for r in reqs]  # type: ignore[method-assign]
    sent = [f"g{i:03d}" for i in range(300)]
    txns = alice.outbox.queue_many("gap", sent)
    await wait_all(alice, txns)
    assert len(refused) == 2
    assert out_of_order, "no send was in flight behind the refused one"
    check_exactly_once(alice, events, "gap", sent, txns)
    await bob_events.until(lambda: len(texts(bob, "gap")) == 300)
    check_exactly_once(bob, bob_events, "gap", sent, txns)


async def test_a_node_killed_mid_window_loses_nothing_and_stores_once(
    tmp_path: Path, clients: ClientFactory
) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, events = await clients.make("alice", server.connect)
        bob, bob_events = await clients.make("bob", server.connect)
        await alice.create_room("kill", ["bob"])
        killed: list[int] = []

        def kill_mid_window(issued: int, unanswered: int) -> None:
            if issued >= 100 and unanswered > 0 and not killed:
                killed.append(unanswered)
                server.kill()  # kill -9, sends in flight

        InFlight(alice, kill_mid_window)
        sent = [f"k{i:03d}" for i in range(300)]
        txns = alice.outbox.queue_many("kill", sent)
        await events.until(lambda: bool(killed) and alice.status.state is ConnState.RECONNECTING)
        server.start()
        await wait_all(alice, txns)
        check_exactly_once(alice, events, "kill", sent, txns)
        await bob_events.until(lambda: len(texts(bob, "kill")) == 300, timeout=60)
        check_exactly_once(bob, bob_events, "kill", sent, txns)
        db = sqlite3.connect(server.data / "curvechat.db")
        stored = db.execute(
            "SELECT seq, txn FROM messages WHERE room='kill' ORDER BY seq"
        ).fetchall()
        db.close()
        assert stored == list(enumerate(txns, start=1))
    finally:
        server.kill()


async def test_a_burst_of_pushes_is_written_in_one_transaction(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("burst", ["bob"])
    await bob_events.until(lambda: "burst" in [r.room for r in bob.rooms()])
    sent = [f"b{i:02d}" for i in range(60)]
    async with bob.lock:  # bob's worker waits: the pushes pile up
        await wait_all(alice, alice.outbox.queue_many("burst", sent))
        jobs = bob.pushes.jobs
        async with asyncio.timeout(20):
            while jobs.qsize() < len(sent) - 1:  # the worker holds the first one
                await asyncio.sleep(0.02)
        tx = Transactions(bob)
    await bob_events.until(lambda: len(texts(bob, "burst")) == len(sent))
    assert texts(bob, "burst") == sent
    assert tx.writes == [len(sent)]
    live = [e for e in bob_events.of(ev.MessageReceived) if e.message.room == "burst"]
    assert [e.message.seq for e in live] == list(range(1, 61)) and all(e.live for e in live)


async def test_a_catch_up_page_is_written_in_one_transaction(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    await alice.create_room("page", ["bob"])
    await clients.close(bob)
    sent = [f"q{i:03d}" for i in range(200)]
    await wait_all(alice, alice.outbox.queue_many("page", sent))
    bob, events = await clients.make("bob", server.connect, ready=False)
    tx = Transactions(bob)  # before the client's first step: it has not synced yet
    assert await bob.wait_ready(20)
    assert texts(bob, "page") == sent
    assert tx.writes == [len(sent)]
    assert events.of(ev.CaughtUp)[0].messages == len(sent)


async def test_catch_up_asks_for_the_next_page_while_it_opens_this_one(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    await alice.create_room("pages", ["bob"])
    await clients.close(bob)
    sent = [f"r{i:04d}" for i in range(1_100)]  # three pages of at most 500
    await wait_all(alice, alice.outbox.queue_many("pages", sent))
    bob, events = await clients.make("bob", server.connect, ready=False)
    tx = Transactions(bob)  # before the client's first step: it has not synced yet
    conn = bob.conn
    real = conn.request
    asked: list[tuple[int, int]] = []  # (cursor asked from, pages written by then)

    async def request(req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply:
        if isinstance(req, m.Sync) and "pages" in req.cursors:
            asked.append((req.cursors["pages"], len(tx.writes)))
        return await real(req, timeout)

    conn.request = request  # type: ignore[method-assign]
    assert await bob.wait_ready(30)
    assert texts(bob, "pages") == sent
    # Each next page asked for before the one before it was written.
    assert asked == [(0, 0), (500, 0), (1000, 1)]
    assert tx.writes == [500, 500, 100]  # a transaction per page, in order
    assert events.of(ev.CaughtUp)[0].messages == len(sent)
    assert [r.seq for r in bob.cache.messages("pages", limit=2_000)] == list(range(1, 1_101))
