"""Hostile users with ordinary accounts against a real node: refusals that
cost the node nothing much, whatever the length of a room's log."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.store import SQLiteStore
from curvechat.store.base import EpochRecord, MemberChange, OpRecord

from support.clients import ClientFactory
from support.raw import RawClient, Room
from support.servers import ServerProcess

LOG_OPS = 5_001  # create, then bob added and removed 2,500 times
HOSTILE = 16
RATE = 20.0  # requests/s per hostile connection


async def _long_room(path: Path, alice: Identity, bob: Identity) -> None:
    """Room "big" with a 5,001-op log, written straight into the node's store."""
    state = MemberState.empty("big")
    ops = []
    for i in range(LOG_OPS):
        kind, target = ("create", alice) if i == 0 else (("add", "remove")[i % 2 == 0], bob)
        op = state.next_op(kind, "alice", target.user, target.sign_pub, i)  # type: ignore[arg-type]
        signed = sign_op(alice, op)
        state, _ = state.apply(signed)
        ops.append(OpRecord(i, signed.op, signed.sig))
    store = SQLiteStore(path)
    await store.open()
    try:
        for who in (alice, bob):
            await store.register(who.user, who.sign_pub, who.transport_pub)
        changes = [MemberChange("alice", True, True), MemberChange("bob", True)]
        await store.create_room("big", ops, changes, EpochRecord(0, LOG_OPS - 1, "alice"), [])
    finally:
        await store.close()


@pytest.fixture
def long_log_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Identity, Identity]]:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    asyncio.run(_long_room(data / "curvechat.db", alice, bob))
    server = ServerProcess(data).start()
    try:
        yield server, alice, bob
    finally:
        server.stop()


def _bogus_send(epoch: int, n: int) -> m.Send:
    """A send by bob under an epoch above the room's: refused as stale."""
    env = m.Envelope(room="big", epoch=epoch, sender="bob", txn=f"hostile-{n:012d}",
                     nonce=bytes(24), ct=bytes(272), sig=bytes(64))  # fmt: skip
    return m.Send(envelope=env)


def test_refusals_stay_cheap_with_a_long_log(
    long_log_server: tuple[ServerProcess, Identity, Identity],
) -> None:
    """12 non-members ask for the members of a 5,001-op room and 4 connections
    of a member send under a higher epoch, 20 times a second each: an honest
    member's ping round trip stays under 50 ms at the 99th percentile."""
    server, alice, bob = long_log_server
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    honest = RawClient(ctx, server.connect, alice)
    assert isinstance(honest.request(m.Members(room="big", after=LOG_OPS - 2)), m.MemberLog)
    hostile: list[tuple[RawClient, bool]] = []
    for i in range(HOSTILE):
        if i < 4:
            hostile.append((RawClient(ctx, server.connect, bob), True))
        else:
            raw = RawClient(ctx, server.connect, Identity.generate(f"mallory{i}"))
            raw.register()
            hostile.append((raw, False))
    stop = threading.Event()
    refused: list[int] = []

    def attack() -> None:
        n = 0
        while not stop.is_set():
            t0 = time.monotonic()
            for raw, member in hostile:
                n += 1
                raw.send(_bogus_send(7, n) if member else m.Members(room="big", after=-1))
                refused.append(raw.drain())
            time.sleep(max(0.0, 1 / RATE - (time.monotonic() - t0)))

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        rtts = []
        for _ in range(150):
            t0 = time.perf_counter()
            reply = honest.request(m.Ping(t=0), timeout=5)
            rtts.append((time.perf_counter() - t0) * 1000)
            assert isinstance(reply, m.Pong)
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    p99 = statistics.quantiles(rtts, n=100)[98]
    print(f"honest ping p99 {p99:.1f} ms, median {statistics.median(rtts):.1f} ms; "
          f"{sum(refused)} refusals read")  # fmt: skip
    assert sum(refused) > HOSTILE * 20  # the attack ran, and was answered
    assert p99 < 50.0
    for raw, _ in hostile:
        raw.close()
    honest.close()
    ctx.term()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


STALLED = 8
BIG_SENDS = 1_000
BIG_CT = 16 + 256 * 255  # the largest ciphertext a message may have (65,296 bytes)


async def test_slow_readers_do_not_pin_memory(
    bulk_server: ServerProcess, clients: ClientFactory
) -> None:
    """8 connections of a member keep pinging but never read, while 1,000
    messages of 64 KiB go to their room: the node's memory grows by less than
    64 MB; a stalled connection that reads again is told to resync and gets
    every message by seq."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    mallory = Identity.generate("mallory")
    stalled = [RawClient(ctx, bulk_server.connect, mallory, hoard=False) for _ in range(STALLED)]
    stalled[0].register()
    for raw in stalled[1:]:
        assert isinstance(raw.request(m.Hello(client="stalled")), m.Welcome)
    alice, _ = await clients.make("alice", bulk_server.connect)
    await alice.create_room("flood", ["mallory"])
    epoch = max(alice.core.held("flood"))
    sender = RawClient(ctx, bulk_server.connect, alice.identity)
    assert bulk_server.proc is not None
    before = _rss_mb(bulk_server.proc.pid)

    def flood() -> None:
        window = 16
        for n in range(BIG_SENDS):
            env = m.Envelope(room="flood", epoch=epoch, sender="alice", txn=f"flood-{n:010d}",
                             nonce=bytes(24), ct=bytes(BIG_CT), sig=bytes(64))  # fmt: skip
            sender.send(m.Send(envelope=env))
            if n >= window:
                assert isinstance(sender.recv(), m.SendAck)
            if n % 50 == 0:
                for raw in stalled:  # pinging, never reading
                    raw.send(m.Ping(t=n))
        for _ in range(window):
            assert isinstance(sender.recv(), m.SendAck)

    await asyncio.to_thread(flood)
    await asyncio.sleep(1.0)
    grown = _rss_mb(bulk_server.proc.pid) - before
    print(f"node RSS grew by {grown:.1f} MB")
    assert grown < 64

    # One stalled connection reads again, as a client does: it confirms each
    # mark it reads, is told to resync, and fetches every message by seq.
    reader = stalled[0]
    got_resync = False
    deadline = time.monotonic() + 60
    while not got_resync and time.monotonic() < deadline:
        if not reader.sock.poll(1000):
            continue
        frame = decode_server_frame(reader.sock.recv())
        if isinstance(frame.msg, m.Mark):
            reader.send(m.Ping(t=1, read_mark=frame.msg.mark))
        got_resync = isinstance(frame.msg, m.Resync)
    assert got_resync
    seqs: list[int] = []
    while len(seqs) < BIG_SENDS:
        reader.send(m.History(room="flood", after=max(seqs, default=0), limit=500))
        page = reader.recv()
        while isinstance(page, m.Pong):  # replies to pings: while stalled, and for marks
            page = reader.recv()
        assert isinstance(page, m.Messages) and page.items
        seqs.extend(item.seq for item in page.items)
    assert seqs == list(range(1, BIG_SENDS + 1))
    for raw in [*stalled, sender]:
        raw.close()
    ctx.term()


def test_connections_per_user_are_limited(server: ServerProcess) -> None:
    """A user may hold 16 connections to a node; the 17th is refused with its
    own code, and a freed slot can be taken again."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    eve = Identity.generate("eve")
    conns = [RawClient(ctx, server.connect, eve) for _ in range(17)]
    conns[0].register()
    replies = [raw.request(m.Hello(client="x")) for raw in conns[1:]]
    assert all(isinstance(r, m.Welcome) for r in replies[:15])
    assert isinstance(replies[15], m.Error) and replies[15].code == "too_many_connections"
    conns[0].close()
    time.sleep(0.5)  # the node sees the disconnect
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        again = conns[16].request(m.Hello(client="x"))
        if isinstance(again, m.Welcome):
            break
        time.sleep(0.5)
    assert isinstance(again, m.Welcome)
    for raw in conns[1:]:
        raw.close()
    ctx.term()


def test_connections_that_said_bye_and_speak_again_are_admitted_again(
    server: ServerProcess,
) -> None:
    """16 connections say `bye`, 16 new ones take their places, and the first
    16 speak again: they used to count as live again without admission (64
    connections of one user, all pushed to). Now a request of theirs is
    refused `too_many_connections`, and a message is pushed to 16."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    eve, alice = Identity.generate("eve"), Identity.generate("alice")
    a = RawClient(ctx, server.connect, alice)
    a.register()
    first = [RawClient(ctx, server.connect, eve) for _ in range(16)]
    first[0].register()
    for raw in first[1:]:
        assert isinstance(raw.request(m.Hello(client="x")), m.Welcome)
    room = Room(alice, "limits", [eve])
    assert isinstance(a.request(room.create), m.RoomChanged)
    for raw in first:
        assert isinstance(raw.request(m.Bye()), m.ByeAck)
    fresh = [RawClient(ctx, server.connect, eve) for _ in range(16)]
    for raw in fresh:
        assert isinstance(raw.request(m.Hello(client="x")), m.Welcome)
    for raw in first:  # back from bye
        assert isinstance(raw.request(m.Ping(t=1)), m.Pong)
        again = raw.request(m.Hello(client="x"))
        assert isinstance(again, m.Error) and again.code == "too_many_connections"
    for raw in [*first, *fresh]:
        raw.drain()
    assert isinstance(a.request(room.send(alice)), m.SendAck)
    time.sleep(1.0)
    pushed = 0
    for raw in [*first, *fresh]:
        while raw.sock.poll(0):
            if isinstance(decode_server_frame(raw.sock.recv()).msg, m.MessagePush):
                pushed += 1
    for raw in [*first, *fresh, a]:
        raw.close()
    ctx.term()
    assert pushed == 16


def test_request_bytes_queued_per_connection_are_bounded(server: ServerProcess) -> None:
    """Large requests sent faster than served are refused once 2 MiB wait."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = RawClient(ctx, server.connect, Identity.generate("frank"))
    raw.register()
    # Held while they are sent, so that they arrive together, faster than served
    # (else a node with a core to spare may serve each before the next comes).
    server.freeze()
    try:
        for n in range(60):  # 60 sends of 64 KiB into a room frank is not in
            env = m.Envelope(room="nowhere", epoch=0, sender="frank", txn=f"frank-{n:010d}",
                             nonce=bytes(24), ct=bytes(BIG_CT), sig=bytes(64))  # fmt: skip
            raw.send(m.Send(envelope=env))
    finally:
        server.thaw()
    replies = [raw.recv() for _ in range(60)]
    assert all(isinstance(r, m.Error) for r in replies)
    bounded = [r for r in replies if "request bytes" in getattr(r, "message", "")]
    assert bounded and all(r.code == "rate_limited" for r in bounded)
    assert any(getattr(r, "code", "") == "no_such_room" for r in replies)  # the rest served
    raw.close()
    ctx.term()


KEYS = int(os.environ.get("CURVECHAT_STORM_KEYS", "2500"))
BATCH = 500


def _storm_batch(ctx: zmq.Context[zmq.Socket[bytes]], connect: str) -> int:
    """BATCH connections, each with a CURVE key never seen before: hello,
    welcome, gone. Returns how many were welcomed."""
    addr = parse_connect(connect)[0]
    socks = []
    for _ in range(BATCH):
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        pub, sec = zmq.curve_keypair()
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
            addr.server_key.encode(), pub, sec)  # fmt: skip
        sock.connect(addr.endpoint)
        sock.send(encode_request(1, m.Hello(client="storm")))
        socks.append(sock)
    welcomed = 0
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    deadline = time.monotonic() + 60
    pending = set(socks)
    while pending and time.monotonic() < deadline:
        for sock, _ in poller.poll(1000):
            if sock in pending:
                sock.recv()
                pending.discard(sock)
                poller.unregister(sock)
                welcomed += 1
    for sock in socks:
        sock.close(linger=0)
    return welcomed


def test_per_key_memory_is_returned(server: ServerProcess) -> None:
    """KEYS distinct CURVE keys (2,500; CURVECHAT_STORM_KEYS=50000 for the long
    run) connect, say hello and leave, twice: once they are gone the node's
    memory is back to within a few MB of where it was, or, where the
    allocator keeps the freed pages (as glibc may when the machine is busy),
    the second storm takes no more than the first left: what a key cost is
    returned for the next to use, not kept."""
    assert server.proc is not None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.setsockopt(zmq.MAX_SOCKETS, BATCH + 64)

    def storm_and_settle(before: float) -> tuple[int, float, float]:
        welcomed = sum(_storm_batch(ctx, server.connect) for _ in range(KEYS // BATCH))
        peak = _rss_mb(server.proc.pid)  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the reaper forgets the sessions within 10 s
            time.sleep(2)
            after = _rss_mb(server.proc.pid)  # type: ignore[union-attr]
            if after - before < 4:
                break
        print(
            f"{welcomed} keys welcomed; node RSS {before:.1f} -> peak {peak:.1f} -> {after:.1f} MB"
        )
        return welcomed, peak, after

    try:  # closed whatever fails: a socket left open fails a later test of this worker
        _storm_batch(ctx, server.connect)  # warm up: the first allocations are not growth
        time.sleep(12)
        before = _rss_mb(server.proc.pid)
        welcomed, _, after = storm_and_settle(before)
        honest = RawClient(ctx, server.connect, Identity.generate("grace"))
        assert welcomed > KEYS * 0.95
        if after - before >= 4:  # kept by the allocator, or by the node? A second storm tells
            welcomed, peak, again = storm_and_settle(after)
            assert welcomed > KEYS * 0.95
            # The second storm reused what the first left, or what both
            # took was given back (glibc may hold the first storm's pages
            # in arenas the second does not draw from, and trim them after).
            assert (peak - after < 4 and again - after < 4) or again - before < 4
        assert isinstance(honest.request(m.Hello(client="after")), m.Welcome)
    finally:
        ctx.destroy(linger=0)
