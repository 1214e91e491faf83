"""The forwarding side of the node link (server/forwarder.py): routing by
ownership, the fallback to a local commit, acks in the caller's order, no
forward left unsettled; and the link's heartbeat against a real owner side
(server/nodelink.py LinkServer) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from curvechat.protocol import encode
from curvechat.protocol import messages as m
from curvechat.server import nodelink
from curvechat.server.forwarder import Forwarder
from curvechat.server.linkwire import LINK_DOMAIN, PING_S, SILENT_S, Forward, enc
from curvechat.server.metrics import NodeMetrics
from curvechat.server.nodelink import GUARDED, LinkServer, NodeKeys, bind_link
from curvechat.server.ownership import Ownership, owner_of
from curvechat.server.router import open_monitor
from curvechat.store import Committed, NewMessage, StoreUnavailable

NODES = ["a", "b"]
OURS = next(f"r{i}" for i in range(100) if owner_of(f"r{i}", NODES) == "a")
THEIRS = next(f"r{i}" for i in range(100) if owner_of(f"r{i}", NODES) == "b")


class FakeStore:
    """The local group commit: records what was queued, in order."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail_rooms: set[str] = set()
        self.duplicates: set[str] = set()

    def submit(self, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        self.calls.append([short(m.txn) for m in batch])
        fut: asyncio.Future[list[Committed]] = asyncio.get_running_loop().create_future()
        if any(m.room in self.fail_rooms for m in batch):
            fut.set_exception(StoreUnavailable("etcd is away"))
        else:
            seq = len(self.calls) * 100
            fut.set_result(
                [
                    Committed(m.room, m.txn, seq + i, 1, short(m.txn) in self.duplicates)
                    for i, m in enumerate(batch)
                ]
            )
        return fut


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.term()


def forwarder(ctx: zmq.asyncio.Context, store: FakeStore) -> Forwarder:
    own = Ownership("a")
    own.set_live(NODES)
    pub, sec = zmq.curve_keypair()
    # No link is known for b: every forward to it fails at once.
    return Forwarder(ctx, pub, sec, own, store.submit, origin="boot-a")


PAD = "-forward"  # a test's short txn names, made valid transaction ids


def short(txn: str) -> str:
    return txn.removesuffix(PAD)


def msg(room: str, txn: str) -> NewMessage:
    """A send of alice's as a node forwards it: its envelope a valid one of
    its room, sender and txn (the owner checks; see the last test)."""
    env = m.Envelope(
        room=room,
        epoch=0,
        sender="alice",
        txn=txn + PAD,
        nonce=bytes(24),
        ct=bytes(16),
        sig=bytes(64),
    )
    return NewMessage(room, "alice", txn + PAD, encode(env))


async def test_parts_owned_elsewhere_fall_back_and_acks_keep_the_callers_order(
    ctx: zmq.asyncio.Context,
) -> None:
    store = FakeStore()
    fwd = forwarder(ctx, store)
    batch = [msg(OURS, "o1"), msg(THEIRS, "t1"), msg(OURS, "o2"), msg(THEIRS, "t2")]
    acks = await fwd.append(batch)
    assert [short(a.txn) for a in acks] == ["o1", "t1", "o2", "t2"]
    # ours queued first (before any await), then b's part committed here
    assert store.calls == [["o1", "o2"], ["t1", "t2"]]
    assert (fwd.forwarded, fwd.fallbacks) == (0, 2)
    # no link is not a failed owner: b is not skipped for DOWN_S
    assert fwd.ownership.down_until == {}


async def test_a_fallback_answer_is_this_nodes_own(ctx: zmq.asyncio.Context) -> None:
    """Committed (or found stored) here: this node pushes it, not the watch;
    a duplicate stays one (the owner's late commit has the owner's origin,
    so this node's watch delivers it)."""
    store = FakeStore()
    store.duplicates = {"t1"}
    fwd = forwarder(ctx, store)
    acks = await fwd.append([msg(THEIRS, "t1"), msg(THEIRS, "t2")])
    assert [(a.duplicate, a.remote) for a in acks] == [(True, False), (False, False)]


async def test_a_failing_part_fails_the_call_and_leaves_nothing_unsettled(
    ctx: zmq.asyncio.Context,
) -> None:
    store = FakeStore()
    store.fail_rooms = {OURS}
    fwd = forwarder(ctx, store)
    unseen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, c: unseen.append(c))
    with pytest.raises(StoreUnavailable):
        await fwd.append([msg(OURS, "o1"), msg(THEIRS, "t1")])
    assert store.calls == [["o1"], ["t1"]]  # b's part was still settled (here)
    gc.collect()
    await asyncio.sleep(0)
    assert unseen == []


@pytest.mark.parametrize(
    "link",
    [("tcp://a,b:7701", None), ("tcp://user@h:7701", None), ("tcp://127.0.0.1:7701", b"short")],
)
async def test_a_link_libzmq_cannot_use_falls_back_and_warns_once(
    ctx: zmq.asyncio.Context, link: tuple[str, bytes | None], caplog: pytest.LogCaptureFixture
) -> None:
    """Another node's bad registry entry (a mistyped --link-advertise, a bad
    key) must not break this node: its rooms' sends are committed here."""
    store = FakeStore()
    fwd = forwarder(ctx, store)
    endpoint, key = link
    entry = (endpoint, key or zmq.curve_keypair()[0])
    with caplog.at_level(logging.WARNING, logger="curvechat.server"):
        for _ in range(3):  # as each registry refresh would
            fwd.set_links({"b": entry})
        acks = await fwd.append([msg(THEIRS, "t1")])
    assert [short(a.txn) for a in acks] == ["t1"] and store.calls == [["t1"]]
    assert (fwd.forwarded, fwd.fallbacks) == (0, 1)
    assert sum("cannot use" in r.getMessage() for r in caplog.records) == 1
    await fwd.close()


class Owner:
    """Node b's side of the link, for real: a LinkServer on loopback (CURVE,
    ZAP admitting by NodeKeys) committing into its own FakeStore."""

    def __init__(self, ctx: zmq.asyncio.Context, a_public: bytes, silent_s: float = 1.0) -> None:
        self.public, secret = zmq.curve_keypair()
        self.auth = AsyncioAuthenticator(ctx)
        self.auth.start()
        self.keys = NodeKeys()
        self.keys.allowed = {a_public}
        self.auth.configure_curve_callback(LINK_DOMAIN, credentials_provider=self.keys)
        sock, self.endpoint = bind_link(ctx, self.public, secret, "tcp://127.0.0.1:*")
        self.store = FakeStore()
        self.server = LinkServer(sock, self.store.submit, self.keys)
        self.server.metrics = self.metrics = NodeMetrics()
        self.server.start()
        self.server.silent.limit_s = silent_s  # the node's own is 15 s
        self.server.guard(open_monitor(ctx, sock, GUARDED), int(self.endpoint.rsplit(":", 1)[1]))

    def shut(self, reason: str) -> float:
        """How many link connections were shut down for `reason`."""
        return self.metrics.auth_failures.labels(reason)._value.get()

    async def silence(self) -> None:
        """From now on b answers nothing (its loop is stuck, or the link cut)."""
        assert self.server._task is not None
        self.server._task.cancel()
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.server.stop()
        self.server.sock.close(linger=0)
        self.auth.stop()


@contextlib.asynccontextmanager
async def linked(
    ctx: zmq.asyncio.Context,
) -> AsyncIterator[tuple[Forwarder, FakeStore, Owner]]:
    """Node a's forwarder linked to a real owner b, a ping answered."""
    store = FakeStore()
    fwd = forwarder(ctx, store)
    owner = Owner(ctx, fwd._public)
    fwd.set_links({"b": (owner.endpoint, owner.public)})
    fwd.start()
    try:
        for _ in range(200):  # until a ping was answered
            await asyncio.sleep(0.05)
            if fwd._peers["b"].answers:
                break
        assert fwd._peers["b"].answers, "no ping was answered"
        yield fwd, store, owner
    finally:
        await fwd.close()
        await owner.close()


async def until_reachable(fwd: Forwarder, reachable: bool) -> None:
    """Until the heartbeat says b is (or is not) reachable."""
    for _ in range(50):
        if (fwd.ownership.unreachable == set()) == reachable:
            return
        await asyncio.sleep(PING_S)
    raise AssertionError(f"b never became {'reachable' if reachable else 'unreachable'}")


async def test_a_link_that_answers_its_pings_is_forwarded_to(ctx: zmq.asyncio.Context) -> None:
    async with linked(ctx) as (fwd, store, owner):
        await asyncio.sleep(SILENT_S + 2 * PING_S)  # pings keep it reachable
        acks = await fwd.append([msg(THEIRS, "t1")])
        assert [(short(a.txn), a.remote) for a in acks] == [("t1", True)]
        assert owner.store.calls == [["t1"]] and store.calls == []
        assert fwd.ownership.unreachable == set()


async def test_a_silent_link_gives_up_its_forwards_after_silent_s(
    ctx: zmq.asyncio.Context,
) -> None:
    """The owner stops answering (its loop is stuck): the forward waiting on
    it is committed here once the link has been silent for SILENT_S, not
    after FORWARD_TIMEOUT_S (which would also skip the owner for DOWN_S);
    the rooms' next sends are committed here without a forward, and are
    forwarded again as soon as the owner answers."""
    async with linked(ctx) as (fwd, store, owner):
        await owner.silence()
        t0 = time.monotonic()
        acks = await fwd.append([msg(THEIRS, "t1")])
        print(f"forward to a silent link committed here after {time.monotonic() - t0:.2f} s")
        assert [(short(a.txn), a.remote) for a in acks] == [("t1", False)]
        assert store.calls == [["t1"]]
        assert fwd.ownership.unreachable == {"b"}
        assert fwd.ownership.down_until == {}  # the heartbeat, not the timeout
        await fwd.append([msg(THEIRS, "t2")])  # not forwarded: committed here at once
        assert store.calls == [["t1"], ["t2"]] and fwd.fallbacks == 2
        assert fwd.forwarded == 0 and fwd._peers["b"].pending == {}
        owner.server.start()  # answers again
        await until_reachable(fwd, True)
        acks = await fwd.append([msg(THEIRS, "t3")])
        assert acks[0].remote and ["t3"] in owner.store.calls


async def test_forwards_given_up_are_committed_in_send_order_before_later_sends(
    ctx: zmq.asyncio.Context,
) -> None:
    """Twenty forwards wait on a link that goes silent; one more send comes
    right after the link was found unreachable. The local store gets them
    in the order they were sent: the forwards' messages are queued when the
    link is given up, so the later send cannot overtake them."""
    async with linked(ctx) as (fwd, store, owner):
        await owner.silence()
        n = 20
        waiting = [asyncio.ensure_future(fwd.append([msg(THEIRS, f"m{i}")])) for i in range(n)]
        await asyncio.sleep(0)
        assert len(fwd._peers["b"].pending) == n
        fwd.beat(time.monotonic() + SILENT_S + 1)  # found silent now
        assert fwd.ownership.unreachable == {"b"}
        later = await fwd.append([msg(THEIRS, "last")])
        acks = [a for t in waiting for a in await t]
        expected = [f"m{i}" for i in range(n)] + ["last"]
        assert [short(a.txn) for a in acks + later] == expected
        assert store.calls == [[t] for t in expected]


async def test_an_owner_whose_commit_failed_is_skipped_not_called_cut_off(
    ctx: zmq.asyncio.Context,
) -> None:
    """`StoreUnavailable` answers one failed commit: the owner is skipped for
    DOWN_S; only `CutOff` says it reaches no etcd member."""
    async with linked(ctx) as (fwd, store, owner):
        owner.store.fail_rooms = {THEIRS}
        acks = await fwd.append([msg(THEIRS, "t1")])
        assert not acks[0].remote and store.calls == [["t1"]]
        assert "b" in fwd.ownership.down_until
        assert fwd.ownership.unreachable == set() and not fwd._peers["b"].cut_off


async def test_a_replaced_link_gives_up_its_forwards_at_once(ctx: zmq.asyncio.Context) -> None:
    """The registry names a new endpoint for b (b restarted elsewhere): what
    waited on the old link is committed here now, not after a timeout."""
    async with linked(ctx) as (fwd, store, owner):
        await owner.silence()
        waiting = asyncio.ensure_future(fwd.append([msg(THEIRS, "t1")]))
        await asyncio.sleep(0)
        fwd.set_links({"b": ("tcp://127.0.0.1:9", owner.public)})  # nothing listens there
        acks = await asyncio.wait_for(waiting, SILENT_S / 2)
        assert [(short(a.txn), a.remote) for a in acks] == [("t1", False)]
        assert store.calls == [["t1"]]


async def test_an_owner_cut_off_from_etcd_is_not_forwarded_to(ctx: zmq.asyncio.Context) -> None:
    async with linked(ctx) as (fwd, store, owner):
        owner.server.cut_off = lambda: True
        await until_reachable(fwd, False)
        assert fwd.ownership.unreachable == {"b"}
        acks = await fwd.append([msg(THEIRS, "t1")])
        assert not acks[0].remote and store.calls == [["t1"]]
        assert owner.store.calls == []  # a cut-off owner queues nothing
        owner.server.cut_off = lambda: False
        await until_reachable(fwd, True)


async def until(check: Any) -> None:
    for _ in range(50):
        if check():
            return
        await asyncio.sleep(PING_S)
    raise AssertionError("the heartbeat never got there")


async def test_an_owner_that_says_its_etcd_is_slow_is_not_forwarded_to(
    ctx: zmq.asyncio.Context,
) -> None:
    """b answers its pings `Slow`: its rooms' sends go to their stand-in (a,
    of two nodes) until it answers them plainly again; b stays reachable."""
    async with linked(ctx) as (fwd, store, owner):
        owner.server.slow = lambda: True
        await until(lambda: fwd.ownership.slow == {"b"})
        acks = await fwd.append([msg(THEIRS, "t1")])
        assert [(short(a.txn), a.remote) for a in acks] == [("t1", False)]
        assert store.calls == [["t1"]] and owner.store.calls == []
        assert fwd.ownership.unreachable == set() and fwd.fallbacks == 1
        owner.server.cut_off = lambda: True  # a cut-off answer says nothing of speed
        await until_reachable(fwd, False)
        assert fwd._peers["b"].slow and fwd.ownership.slow == {"b"}
        owner.server.cut_off = lambda: False
        owner.server.slow = lambda: False
        await until(lambda: fwd.ownership.slow == set())
        acks = await fwd.append([msg(THEIRS, "t2")])
        assert acks[0].remote and owner.store.calls == [["t2"]]


async def test_a_node_whose_etcd_is_slow_forwards_its_own_rooms_sends(
    ctx: zmq.asyncio.Context,
) -> None:
    """This node (a) is slow: the sends into the rooms it owns are committed
    by their stand-in (b), and by a again once it is quick."""
    slow = True
    async with linked(ctx) as (fwd, store, owner):
        fwd.slow_here = lambda: slow
        await until(lambda: fwd.ownership.slow == {"a"})
        acks = await fwd.append([msg(OURS, "t1"), msg(THEIRS, "t2")])
        assert [(short(a.txn), a.remote) for a in acks] == [("t1", True), ("t2", True)]
        assert owner.store.calls == [["t1", "t2"]] and store.calls == []
        slow = False
        await until(lambda: fwd.ownership.slow == set())
        await fwd.append([msg(OURS, "t3")])
        assert store.calls == [["t3"]]


async def test_a_stranger_nesting_its_frame_too_deeply_does_not_stop_the_link(
    ctx: zmq.asyncio.Context,
) -> None:
    async with linked(ctx) as (fwd, store, owner):
        stranger = ctx.socket(zmq.DEALER)
        public, secret = zmq.curve_keypair()  # any key gets through the handshake
        stranger.curve_serverkey, stranger.curve_publickey = owner.public, public
        stranger.curve_secretkey = secret
        stranger.linger = 0
        stranger.connect(owner.endpoint)
        # `{"x": [[[... nil ...]]], "id": 1}`: the id after a value nested too deeply.
        await stranger.send(b"\x82\xa1x" + b"\x91" * 100_000 + b"\xc0\xa2id\x01")
        await asyncio.sleep(2 * PING_S)
        stranger.close()
        assert owner.server._task is not None and not owner.server._task.done()
        acks = await fwd.append([msg(THEIRS, "t1")])
        assert [short(a.txn) for a in acks] == ["t1"] and store.calls == []  # forwarded to b
        assert owner.store.calls == [["t1"]]


async def test_an_owner_refuses_a_forward_with_an_invalid_envelope(
    ctx: zmq.asyncio.Context,
) -> None:
    """The owner pushes envelopes as stored (protocol `message_push`), so it
    stores none it did not check: a forward with an envelope that does not
    decode, or is another room's, is refused whole (nothing of it is
    committed there), and the forwarding node commits it itself, as for any
    refusal that is not the owner's failure."""
    async with linked(ctx) as (fwd, store, owner):
        good = msg(THEIRS, "t1")
        garbage = NewMessage(THEIRS, "alice", "t2" + PAD, b"\xc1")
        elsewhere = msg(OURS, "t3")
        moved = NewMessage(THEIRS, "alice", elsewhere.txn, elsewhere.envelope)
        for bad in (garbage, moved):
            acks = await fwd.append([good, bad])
            assert [(a.remote, a.duplicate) for a in acks] == [(False, False)] * 2
        assert owner.store.calls == []
        assert store.calls == [["t1", "t2"], ["t1", "t3"]]  # committed here instead
        assert fwd.ownership.down_until == {}  # not the owner's failure
        acks = await fwd.append([msg(THEIRS, "t4")])
        assert [(short(a.txn), a.remote) for a in acks] == [("t4", True)]


def stranger_of(ctx: zmq.asyncio.Context, owner: Owner, sndhwm: int = 1000) -> zmq.asyncio.Socket:
    """A DEALER with a key of its own, connected to b's link."""
    stranger = ctx.socket(zmq.DEALER)
    stranger.sndhwm = sndhwm
    public, secret = zmq.curve_keypair()  # any key gets through the handshake
    stranger.curve_serverkey, stranger.curve_publickey = owner.public, public
    stranger.curve_secretkey = secret
    stranger.linger = 0
    stranger.connect(owner.endpoint)
    return stranger


async def test_a_stranger_is_answered_and_then_shut_out(ctx: zmq.asyncio.Context) -> None:
    """A key that is not a node's gets its ``NotANode`` answer, and its
    connection is shut down: it holds no routing id on the link (libzmq
    aborts on a duplicate one) and no file descriptor. The node's own link
    stays up, pinging, past the silence limit."""
    async with linked(ctx) as (fwd, store, owner):
        owner.server.silent.limit_s = 10.0  # not shut down as silent first
        stranger = stranger_of(ctx, owner)
        events = stranger.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            await stranger.send(enc.encode(Forward(-7, "stranger", [])))  # a ping
            answer = await asyncio.wait_for(stranger.recv(), 5)
            assert b"NotANode" in answer
            await asyncio.wait_for(events.recv_multipart(), 5)  # shut down by b
            assert owner.shut("not_a_node") >= 1
        finally:
            stranger.disable_monitor()
            events.close(linger=0)
            stranger.close()
        owner.server.silent.limit_s = 0.5
        await asyncio.sleep(2.5)  # past b's silence limit and a sweep
        acks = await fwd.append([msg(THEIRS, "t1")])
        assert [(short(a.txn), a.remote) for a in acks] == [("t1", True)]
        assert store.calls == [] and owner.shut("silent") == 0


async def test_a_connection_that_never_speaks_is_shut_down(ctx: zmq.asyncio.Context) -> None:
    """A TCP connection to the link that sends nothing (not even a
    handshake) is shut down once silent past the limit."""
    owner = Owner(ctx, b"", silent_s=0.5)
    host, port = owner.endpoint.removeprefix("tcp://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        started = time.monotonic()
        while await asyncio.wait_for(reader.read(4096), 10):
            pass  # libzmq's greeting, then the end of the stream
        assert time.monotonic() - started >= 0.5
        assert owner.shut("silent") == 1
    finally:
        writer.close()
        await owner.close()


async def test_the_oldest_unproven_connections_are_shut_down_past_the_limit(
    ctx: zmq.asyncio.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections that have sent no node's frame are held to MAX_UNPROVEN:
    a host opening many holds no more file descriptors than that."""
    monkeypatch.setattr(nodelink, "MAX_UNPROVEN", 4)
    owner = Owner(ctx, b"", silent_s=60.0)
    host, port = owner.endpoint.removeprefix("tcp://").rsplit(":", 1)
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(6)]
    try:
        for reader, _w in streams[:2]:  # the oldest two
            while await asyncio.wait_for(reader.read(4096), 10):
                pass  # libzmq's greeting, then the end of the stream
        await asyncio.sleep(0.5)
        for reader, _w in streams[2:]:  # the others stay
            assert not reader.at_eof()
        assert owner.shut("not_a_node") == 2
    finally:
        for _r, writer in streams:
            writer.close()
        await owner.close()


async def test_a_node_that_pinged_is_never_one_of_the_crowd(
    ctx: zmq.asyncio.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link connection that sent a node's frame counts no longer among the
    unproven: connections opened after it shut down strangers only."""
    monkeypatch.setattr(nodelink, "MAX_UNPROVEN", 1)
    async with linked(ctx) as (fwd, store, owner):
        owner.server.silent.limit_s = 60.0  # no sweep forgets the node's first
        host, port = owner.endpoint.removeprefix("tcp://").rsplit(":", 1)
        streams = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        try:
            await asyncio.sleep(0.5)
            acks = await fwd.append([msg(THEIRS, "t1")])
            assert [(short(a.txn), a.remote) for a in acks] == [("t1", True)]
            assert store.calls == [] and owner.shut("not_a_node") == 2
        finally:
            for _r, writer in streams:
                writer.close()


async def test_a_stranger_streaming_frames_does_not_hold_the_event_loop(
    ctx: zmq.asyncio.Context,
) -> None:
    """Frames waiting in the link's socket are read without a pause unless
    the reader makes one: a stranger streaming small frames kept the node's
    loop from its clients and its etcd lease. The reader lets the loop run
    every YIELD_EVERY frames: another task gets a turn at least that often."""
    owner = Owner(ctx, b"", silent_s=60.0)
    stranger = stranger_of(ctx, owner, sndhwm=0)
    frames = 100 * nodelink.YIELD_EVERY
    reads = ticked = longest = 0
    sock = owner.server.sock
    recv = sock.recv_multipart

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads, longest
        reads += 1
        longest = max(longest, reads - ticked)
        return recv(*args, **kwargs)

    async def ticker() -> None:
        nonlocal ticked
        while True:
            ticked = reads
            await asyncio.sleep(0)

    sock.recv_multipart = counting  # type: ignore[method-assign]
    task: asyncio.Task[None] | None = None
    try:
        for _ in range(frames):  # queued, and read only once this test awaits
            stranger.send(b"\xc1", flags=zmq.NOBLOCK)
        stranger.send(enc.encode(Forward(-1, "stranger", [])), flags=zmq.NOBLOCK)
        time.sleep(1.0)  # the loop held: libzmq moves them into b's socket
        task = asyncio.ensure_future(ticker())
        answer = await asyncio.wait_for(stranger.recv(), 20)  # after every frame was read
        assert b"NotANode" in answer and reads > frames
        assert longest <= nodelink.YIELD_EVERY + 1
    finally:
        if task is not None:
            task.cancel()
        stranger.close()
        await owner.close()
