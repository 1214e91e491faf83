"""The engine's push queue is bounded (`client/pushqueue.py`): by count and
by bytes, whatever a node sends, and what it drops a sync fetches.

- the queue on its own: its bounds, its overflow flag, its byte count as
  pushes are taken out;
- a node that floods a client with message pushes while it keeps the
  engine's worker waiting (a push for a room the client does not know makes
  it ask `members`, which this node never answers): the queue holds at most
  its bound, drops the rest, and says so once. The node keeps to flow
  control (a mark after each frame, and no more than four frames ahead of
  the client's echo), as a node that did not is cut (`test_inflow.py`);
- a real node and a receiver whose worker is held while 300 messages and an
  invite are pushed to it past a bound of 50: once let go, it has all 300 in
  order, and the new member.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.engine import ChatClient
from curvechat.client.pushqueue import (
    CATCH_UP_TURNS,
    MAX_BYTES,
    MAX_PUSHES,
    OTHER_PUSH_BYTES,
    PushQueue,
    push_size,
)
from curvechat.crypto.identity import Identity
from curvechat.protocol import PROTOCOL_VERSION, decode_request, encode_reply
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress

from support.bare import bare_router
from support.clients import FAST, ClientFactory
from support.servers import ServerProcess

FRAMES = 120  # 1024 pushes each, about 0.9 MB a frame
BOUND = 20_000  # pushes queued: far more than a client ever needs to hold


def _message(seq: int, ct_bytes: int = 272) -> m.MessagePush:
    env = m.Envelope(
        room="r", epoch=0, sender="bob", txn=f"txn{seq:08d}",
        nonce=bytes(24), ct=bytes(ct_bytes), sig=bytes(64),
    )  # fmt: skip
    return m.MessagePush(room="r", message=m.StoredMessage(seq=seq, ts=1, envelope=env))


def _other() -> m.AnyReply:
    return m.RoomPush(room="r", reason="members")


def test_the_queue_holds_at_most_its_count() -> None:
    q = PushQueue(max_pushes=3, max_bytes=MAX_BYTES)
    assert [q.put_nowait(_other()) for _ in range(3)] == [True, True, True]
    assert not q.overflowed
    assert q.put_nowait(_other()) is False and q.put_nowait(_message(1)) is False
    assert q.qsize() == 3 and q.nbytes == 3 * OTHER_PUSH_BYTES
    assert q.overflowed and q.dropped == 2


def test_the_queue_holds_at_most_its_bytes() -> None:
    size = push_size(_message(1))
    assert size == 272 + 200  # the envelope's size in a frame
    q = PushQueue(max_pushes=MAX_PUSHES, max_bytes=2 * size + OTHER_PUSH_BYTES + 100)
    assert q.put_nowait(_message(1)) and q.put_nowait(_message(2))
    assert not q.put_nowait(_message(3))  # one more message does not fit
    assert q.put_nowait(_other())  # a small push still does
    assert not q.put_nowait(_other())
    assert q.qsize() == 3 and q.nbytes == 2 * size + OTHER_PUSH_BYTES
    assert q.overflowed and q.dropped == 2
    big = PushQueue(max_pushes=10, max_bytes=100)
    assert big.put_nowait(_message(1, ct_bytes=65_536))  # an empty queue takes any one push
    assert not big.put_nowait(_other())


async def test_the_overflow_flag_stays_until_cleared_and_comes_back() -> None:
    q = PushQueue(max_pushes=2)
    for seq in (1, 2, 3, 4):
        q.put_nowait(_message(seq))
    assert q.overflowed and q.dropped == 2
    assert [(await q.get()).message.seq, q.get_nowait().message.seq] == [1, 2]  # type: ignore[union-attr]
    assert q.empty() and q.overflowed  # draining does not clear it: the worker does
    q.overflowed = False
    assert q.put_nowait(_message(5)) and q.put_nowait(_message(6)) and not q.overflowed
    assert not q.put_nowait(_message(7))
    assert q.overflowed and q.dropped == 3


def test_the_sync_for_what_was_dropped_is_due_once_empty_or_after_some_turns() -> None:
    """Once the worker has drained the queue; and under a flood that never
    lets it empty, after CATCH_UP_TURNS turns all the same."""
    q = PushQueue(max_pushes=2)
    assert not q.catch_up_due()  # nothing dropped
    for seq in (1, 2, 3):
        q.put_nowait(_message(seq))
    q.get_nowait()
    q.get_nowait()
    assert q.catch_up_due() and not q.overflowed  # empty: due, the flag cleared
    assert not q.catch_up_due()
    for seq in range(4, 8):
        q.put_nowait(_message(seq))  # two kept, two dropped
    due = []
    for _ in range(CATCH_UP_TURNS):
        due.append(q.catch_up_due())  # the worker never empties it
    assert due == [False] * (CATCH_UP_TURNS - 1) + [True] and q.qsize() == 2


async def test_the_byte_count_follows_pushes_taken_in_bursts() -> None:
    q = PushQueue(max_pushes=100)
    pushes = [_message(i, ct_bytes=16 + 256 * (i % 5)) if i % 7 else _other() for i in range(1, 61)]
    for push in pushes:
        assert q.put_nowait(push)
    assert q.nbytes == sum(push_size(p) for p in pushes)
    taken: list[m.AnyReply] = []
    while not q.empty():  # as the worker takes them: one awaited, then a burst
        burst = [await q.get()]
        while not q.empty() and len(burst) < 16:
            burst.append(q.get_nowait())
        taken += burst
        assert q.nbytes == sum(push_size(p) for p in pushes[len(taken) :])
    assert taken == pushes and q.nbytes == 0
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    waiter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert q.put_nowait(_other())
    assert await asyncio.wait_for(waiter, 5) == _other() and q.nbytes == 0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _push_frame(base: int) -> bytes:
    items = []
    for i in range(1024):
        env = m.Envelope(
            room="zz", epoch=0, sender="mallory", txn=f"txn{base + i:08d}",
            nonce=bytes(24), ct=os.urandom(48 + 512), sig=bytes(64),
        )  # fmt: skip
        stored = m.StoredMessage(seq=base + i + 1, ts=1, envelope=env)
        items.append(m.BatchItem(rid=0, msg=m.MessagePush(room="zz", message=stored)))
    return encode_reply(0, m.Batch(items=items))


async def _node(sock: zmq.asyncio.Socket, ready: asyncio.Event, peer: dict) -> None:
    while True:
        ident, data = await sock.recv_multipart()
        peer["id"] = ident
        frame = decode_request(data)
        req, rid = frame.req, frame.rid
        reply: m.AnyReply | None = None
        if isinstance(req, m.Hello):
            reply = m.Welcome(node="n", boot="b", user="alice", time=1, version=PROTOCOL_VERSION)
        elif isinstance(req, m.ListRooms):
            reply = m.RoomList(rooms=[])
        elif isinstance(req, m.Sync):
            reply = m.SyncReply(rooms=[], more=False)
            ready.set()
        elif isinstance(req, m.Ping):
            reply = m.Pong(t=req.t, time=1, node="n", boot="b")
            peer["echoed"] = max(peer.get("echoed", 0), req.read_mark)
        # members, fetch_keys, ...: never answered
        if reply is not None:
            await sock.send_multipart([ident, encode_reply(rid, reply)])


async def test_a_push_flood_does_not_grow_the_client_without_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fake node on a bare ROUTER floods pushes while the worker waits."""
    caplog.set_level(logging.WARNING, logger="curvechat.client")
    ctx = zmq.asyncio.Context()
    sock, port, public = bare_router(ctx)
    sock.sndhwm = 0
    ready = asyncio.Event()
    peer: dict = {}
    node = asyncio.create_task(_node(sock, ready, peer))
    ident = Identity.generate("alice")
    cache = Cache(tmp_path / "cache.db", cache_key(ident.sign_seed))
    address = ServerAddress(f"tcp://127.0.0.1:{port}", public.decode())
    # `members` waits longer than the test lasts, however slow the machine.
    client = ChatClient(ident, cache, [address], **{**FAST, "request_timeout": 60.0})
    await client.start()
    try:
        assert await client.wait_ready(20)
        routing = peer["id"]
        got = []
        real = client._on_push
        client.conn._sock._on_push = lambda msg: (got.append(1), real(msg))
        frame = _push_frame(0)
        before = rss_mb()
        peak_q = 0
        for n in range(FRAMES):
            await sock.send_multipart([routing, _push_frame(n * 1024) if n < 2 else frame])
            await sock.send_multipart([routing, encode_reply(0, m.Mark(mark=n + 1))])
            await asyncio.sleep(0)
            if n % 4 == 3:
                async with asyncio.timeout(30):
                    while peer.get("echoed", 0) < n + 1:
                        await asyncio.sleep(0.005)
            peak_q = max(peak_q, client.pushes.jobs.qsize())
        for _ in range(50):
            await asyncio.sleep(0.02)
            peak_q = max(peak_q, client.pushes.jobs.qsize())
        grown = rss_mb() - before
        print(f"delivered {len(got)}, queued pushes: {peak_q}, client RSS grew {grown:.0f} MB")
        assert peak_q <= BOUND, f"{peak_q} pushes queued in the engine; RSS +{grown:.0f} MB"
        assert client.pushes.jobs.qsize() <= MAX_PUSHES and client.pushes.jobs.nbytes <= MAX_BYTES
        assert client.pushes.jobs.overflowed and client.pushes.jobs.dropped > 0
        full = [r for r in caplog.records if "push queue is full" in r.getMessage()]
        assert len(full) == 1  # once for the episode, nothing per dropped push
    finally:
        node.cancel()
        await client.close()
        cache.close()
        sock.close(0)
        ctx.term()


def _texts(client: ChatClient, room: str) -> list[str | None]:
    return [row.text for row in client.cache.messages(room, limit=10_000)]


async def test_pushes_dropped_past_the_bound_are_fetched_by_a_sync(
    server: ServerProcess, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="curvechat.client")
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await clients.make("carol", server.connect)
    await alice.create_room("flood", ["bob"])
    await bob_events.until(lambda: "flood" in [r.room for r in bob.rooms()])
    bob.pushes.jobs.max_pushes = 50
    sent = [f"m{i:03d}" for i in range(300)]
    async with bob.lock:  # bob's worker waits: his queue fills, then drops
        for txn in alice.queue_many("flood", sent):
            await alice.wait_ack(txn, 60)
        await alice.invite("flood", "carol")  # its push is dropped too
        async with asyncio.timeout(20):
            while bob.pushes.jobs.qsize() + bob.pushes.jobs.dropped < len(sent):
                await asyncio.sleep(0.02)
        assert bob.pushes.jobs.qsize() == 50 and bob.pushes.jobs.overflowed
        caught_up = len(bob_events.of(ev.CaughtUp))
    await bob_events.until(
        lambda: _texts(bob, "flood") == sent and "carol" in bob.members("flood"), timeout=30
    )
    await bob_events.until(lambda: len(bob_events.of(ev.CaughtUp)) > caught_up)
    assert not bob.pushes.jobs.overflowed and bob.pushes.jobs.nbytes == 0
    rows = bob.cache.messages("flood", limit=10_000)
    assert [r.seq for r in rows] == list(range(1, 301)) and all(r.error is None for r in rows)
    told = [e.message.seq for e in bob_events.of(ev.MessageReceived) if e.message.room == "flood"]
    assert told == list(range(1, 301))  # each told once, in order
    full = [r for r in caplog.records if "push queue is full" in r.getMessage()]
    assert len(full) == 1
