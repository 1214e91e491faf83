"""The node's reactor (server/reactor.py) in one process with its clients:
a drained batch of mixed requests, pings while the store is busy, and ZMTP
heartbeats declaring a silent peer dead on both ends.

No wall-clock assertions: timeouts here only bound how long a failing test
waits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
import zmq.utils.z85
from chaos.proxy import ProxyHub

from curvechat.client import connection as conn_mod
from curvechat.client.connection import Connection
from curvechat.crypto import Identity, Plaintext, seal_message
from curvechat.protocol import (
    decode_server_frame,
    encode_request,
    encode_send_item,
    encode_sends,
)
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress
from curvechat.server import rooms as rooms_module
from curvechat.server.node import ChatNode
from curvechat.server.ratelimit import RateLimits
from curvechat.store import Committed, NewMessage
from curvechat.store.sqlite import SQLiteStore

from support.raw import Room


class GatedStore(SQLiteStore):
    """A SQLite store whose message commits wait while `gate` is closed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    async def append_messages(self, batch: Sequence[NewMessage]) -> list[Committed]:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().append_messages(batch)


class Peer:
    """A raw asyncio DEALER with CURVE whose key is `identity`'s transport key."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, server_key: bytes, who: str):
        self.identity = Identity.generate(who)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.curve_serverkey = server_key
        self.sock.curve_publickey = zmq.utils.z85.encode(self.identity.transport_pub)
        self.sock.curve_secretkey = zmq.utils.z85.encode(self.identity.transport_secret)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.rids = itertools.count(1)

    async def send(self, req: m.AnyRequest) -> int:
        rid = next(self.rids)
        await self.sock.send(encode_request(rid, req))
        return rid

    async def reply(self) -> m.ServerFrame:
        """The next reply (pushes and marks skipped)."""
        async with asyncio.timeout(20):
            while True:
                frame = decode_server_frame(await self.sock.recv())
                if frame.rid != 0:
                    return frame

    async def request(self, req: m.AnyRequest) -> m.AnyReply:
        rid = await self.send(req)
        frame = await self.reply()
        assert frame.rid == rid
        return frame.msg

    async def register(self) -> None:
        ident = self.identity
        reply = await self.request(
            m.Register(
                user=ident.user, sign_pub=ident.sign_pub, transport_sig=ident.transport_sig()
            )
        )
        assert isinstance(reply, m.Registered), reply


class Setup:
    def __init__(self, node: ChatNode, store: GatedStore, ctx: zmq.asyncio.Context) -> None:
        self.node, self.store, self.ctx = node, store, ctx
        assert node.endpoint is not None
        self.endpoint = node.endpoint
        self.server_key = node.public_key

    def peer(self, who: str) -> Peer:
        return Peer(self.ctx, self.endpoint, self.server_key, who)


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    store = GatedStore(tmp_path / "store.db")
    await store.open()
    public, secret = zmq.curve_keypair()
    node = ChatNode(store, public_key=public, secret_key=secret, bind="tcp://127.0.0.1:0")
    await node.start()
    ctx = zmq.asyncio.Context()
    try:
        yield Setup(node, store, ctx)
    finally:
        store.gate.set()
        ctx.destroy(linger=0)
        await node.stop()
        await store.close()


async def _room(setup: Setup) -> tuple[Peer, Peer, Room]:
    alice, bob = setup.peer("alice"), setup.peer("bob")
    await alice.register()
    await bob.register()
    room = Room(alice.identity, "general", [bob.identity])
    assert isinstance(await alice.request(room.create), m.RoomChanged)
    return alice, bob, room


async def _frames(sock: zmq.Socket[bytes], count: int) -> list[list[zmq.Frame]]:
    """Receive `count` messages from the node's socket ourselves."""
    batch: list[list[zmq.Frame]] = []
    async with asyncio.timeout(20):
        while len(batch) < count:
            try:
                batch.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                await asyncio.sleep(0.005)
    return batch


async def test_a_drained_batch_of_mixed_requests_is_answered_in_order(setup: Setup) -> None:
    alice, bob, room = await _room(setup)
    reactor = setup.node._reactor
    assert reactor is not None
    reactor.stop()  # the test drains the socket itself, then hands over one batch
    bad = encode_request(999, m.Ping(t=1)).replace(b"ping", b"pong")
    plans: dict[str, list[tuple[int, str]]] = {}
    for peer in (alice, bob):
        plan: list[tuple[int, str]] = []
        for kind in ("send", "ping", "send", "rooms", "send", "hello", "bad", "send", "ping"):
            if kind == "send":
                rid = await peer.send(room.send(peer.identity, f"{peer.identity.user}"))
            elif kind == "ping":
                rid = await peer.send(m.Ping(t=len(plan)))
            elif kind == "rooms":
                rid = await peer.send(m.ListRooms())
            elif kind == "hello":
                rid = await peer.send(m.Hello(client="test"))
            else:
                rid = 999
                await peer.sock.send(bad)
            plan.append((rid, kind))
        plans[peer.identity.user] = plan
    batch = await _frames(reactor.sock, 18)
    reactor._handle(batch)
    reactor.start()
    for peer in (alice, bob):
        plan = plans[peer.identity.user]
        replies = [await peer.reply() for _ in plan]
        by_rid = {f.rid: f.msg for f in replies}
        assert sorted(by_rid) == sorted(rid for rid, _ in plan)
        # Pings may overtake; everything else comes in the order it was sent.
        ordered = [f.rid for f in replies if not isinstance(f.msg, m.Pong)]
        assert ordered == [rid for rid, kind in plan if kind != "ping"]
        seqs = []
        for rid, kind in plan:
            msg = by_rid[rid]
            if kind == "send":
                assert isinstance(msg, m.SendAck) and not msg.duplicate, msg
                seqs.append(msg.seq)
            elif kind == "ping":
                assert isinstance(msg, m.Pong) and msg.t == plan.index((rid, kind))
            elif kind == "rooms":
                # It sees the sends made before it on its connection.
                assert isinstance(msg, m.RoomList)
                assert msg.rooms[0].head >= seqs[-1]
            elif kind == "hello":
                assert isinstance(msg, m.Welcome) and msg.user == peer.identity.user
            else:
                assert isinstance(msg, m.Error) and msg.code == "bad_frame"
        assert seqs == sorted(seqs)
    # One order for the room, each message once, as the node acked it.
    history = await alice.request(m.History(room=room.name, after=0))
    assert isinstance(history, m.Messages)
    assert [i.seq for i in history.items] == list(range(1, 9))
    assert len({i.envelope.txn for i in history.items}) == 8


async def test_pings_are_answered_inline_while_the_store_is_busy(setup: Setup) -> None:
    alice, bob, room = await _room(setup)
    setup.store.gate.clear()
    send_rid = await alice.send(room.send(alice.identity))
    async with asyncio.timeout(20):
        while setup.store.waiting == 0:  # the send's commit is held in the store
            await asyncio.sleep(0.01)
    for t in (1, 2, 3):
        pong = await alice.request(m.Ping(t=t))  # the same connection, and
        assert isinstance(pong, m.Pong) and pong.t == t
        pong = await bob.request(m.Ping(t=t))  # another one
        assert isinstance(pong, m.Pong) and pong.t == t
    assert setup.store.waiting > 0  # still held: the pongs did not wait for it
    setup.store.gate.set()
    ack = await alice.reply()
    assert ack.rid == send_rid and isinstance(ack.msg, m.SendAck) and ack.msg.seq == 1


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_heartbeats_declare_a_silent_peer_dead(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conn_mod, "HEARTBEAT_S", 0.1)
    hub = ProxyHub()
    try:
        port = int(setup.endpoint.rsplit(":", 1)[1])
        proxy = hub.add("node", port)
        ident = Identity.generate("carol")
        details: list[str] = []
        conn = Connection(
            [ServerAddress(f"tcp://{proxy.endpoint}", setup.server_key.decode())],
            public_key=zmq.utils.z85.encode(ident.transport_pub),
            secret_key=zmq.utils.z85.encode(ident.transport_secret),
            on_push=lambda msg: None,
            on_status=lambda st: details.append(st.detail),
            ping_interval=3600.0,  # no app-level ping: liveness is the heartbeats' alone
            liveness=4,
        )
        await conn.start()
        try:
            await _until(lambda: conn.live)
            (sess,) = setup.node.sessions.values()
            assert sess.gone is None
            proxy.set(mode="blackhole")  # open connections, not a byte through
            # Its heartbeats carried a TTL (0.8 s here): no whole message for
            # that long, the node's libzmq closes it, the monitor says so.
            await _until(lambda: sess.gone == "disconnected")
            # And the client's: it stops being live without having sent a ping.
            await _until(lambda: not conn.live)
            assert any("connection closed" in d for d in details), details
        finally:
            await conn.close(goodbye=False)
    finally:
        hub.close()


async def _pushes(peer: Peer, count: int) -> list[m.StoredMessage]:
    """The next `count` messages pushed to `peer`, one to a frame."""
    pushes = []
    async with asyncio.timeout(10):
        while len(pushes) < count:
            frame = decode_server_frame(await peer.sock.recv())
            if isinstance(frame.msg, m.MessagePush):
                pushes.append(frame.msg.message)
    return pushes


async def test_a_duplicate_send_is_pushed_again(setup: Setup) -> None:
    """A resend of a stored message gets the original ack, and the other
    members its push once more: the first commit may have gone unpushed
    (its answer lost to a deadline while the store committed it)."""
    alice, bob, room = await _room(setup)
    send = room.send(alice.identity, "once")
    first = await alice.request(send)
    again = await alice.request(send)
    assert isinstance(first, m.SendAck) and isinstance(again, m.SendAck)
    assert (again.seq, again.ts, again.duplicate) == (first.seq, first.ts, True)
    pushes = await _pushes(bob, 2)
    assert [(p.seq, p.envelope.txn) for p in pushes] == [(first.seq, send.envelope.txn)] * 2


async def test_a_resend_is_answered_with_the_stored_message_never_its_own(setup: Setup) -> None:
    """A resend of a stored txn with other contents gets the original ack.
    Pushed again is the stored message, never the resend's envelope (which
    would hand members at that seq what history does not serve there), and
    only if the resend is as long: a resend of one character pushed the
    stored 12 KB again, 128 times what it sent for one of 64 KiB."""
    alice, bob, room = await _room(setup)
    send = room.send(alice.identity, "pay carol 10" * 1000)

    def resend(text: str) -> m.Send:
        return m.Send(
            envelope=seal_message(
                alice.identity,
                room=room.name,
                epoch=0,
                key=room.key.key,
                txn=send.envelope.txn,
                plaintext=Plaintext(text=text, ts=1),
            )
        )

    first = await alice.request(send)
    for other in (resend("x"), resend("y" * 12_000)):
        again = await alice.request(other)
        assert isinstance(again, m.SendAck) and (again.seq, again.duplicate) == (first.seq, True)
    after = await alice.request(room.send(alice.identity, "after"))
    assert isinstance(after, m.SendAck)
    pushes = await _pushes(bob, 3)
    assert [(p.seq, p.envelope) for p in pushes[:2]] == [(first.seq, send.envelope)] * 2
    assert (pushes[2].seq, pushes[2].envelope.txn) == (after.seq, after.txn)


async def _items(peer: Peer, count: int) -> tuple[int, list[tuple[bool, int, m.AnyReply]]]:
    """How many frames brought them, and (in a batch frame, rid, message) of
    the next `count` acks and message pushes `peer` receives."""
    got: list[tuple[bool, int, m.AnyReply]] = []
    frames = 0
    async with asyncio.timeout(20):
        while len(got) < count:
            frame = decode_server_frame(await peer.sock.recv())
            if isinstance(frame.msg, m.Batch):
                got += [(True, i.rid, i.msg) for i in frame.msg.items]
            elif isinstance(frame.msg, m.SendAck | m.MessagePush):
                got.append((False, frame.rid, frame.msg))
            else:
                continue
            frames += 1
    return frames, got


async def test_batch_readers_get_a_pass_in_batch_frames_and_others_plain_frames(
    setup: Setup,
) -> None:
    alice, bob, carol = setup.peer("alice"), setup.peer("bob"), setup.peer("carol")
    for peer, batch in ((alice, True), (bob, False), (carol, True)):
        assert isinstance(await peer.request(m.Hello(client="t", batch=batch)), m.Welcome)
        await peer.register()
    room = Room(alice.identity, "general", [bob.identity, carol.identity])
    assert isinstance(await alice.request(room.create), m.RoomChanged)
    reactor = setup.node._reactor
    assert reactor is not None
    reactor.stop()  # one pass for every send below: one group commit
    rids = {"alice": [await alice.send(room.send(alice.identity)) for _ in range(5)]}
    rids["carol"] = [await carol.send(room.send(carol.identity)) for _ in range(3)]
    rids["bob"] = []
    reactor._handle(await _frames(reactor.sock, 8))
    reactor.start()
    for peer in (alice, bob, carol):
        user = peer.identity.user
        # each gets 8 items: its own acks and the others' pushes
        frames, got = await _items(peer, 8)
        if user == "bob":
            assert frames == 8 and not any(b for b, _, _ in got)
        else:
            assert frames == 1 and all(b for b, _, _ in got)  # the whole pass in one frame
        acks = [rid for _, rid, msg in got if isinstance(msg, m.SendAck)]
        assert acks == rids[user]
        senders = [
            msg.message.envelope.sender for _, _, msg in got if isinstance(msg, m.MessagePush)
        ]
        assert user not in senders and len(senders) == 8 - len(acks)
        # acks and pushes together: the room's one order, each message once
        seqs = [msg.seq if isinstance(msg, m.SendAck) else msg.message.seq for _, _, msg in got]  # type: ignore[union-attr]
        assert seqs == list(range(1, 9)), (user, seqs)


# --- `sends` requests: several sends in one frame ------------------------------


def _sends(room: Room, sender: Identity, rids: Sequence[int]) -> bytes:
    """A `sends` frame of one send per rid, each naming the one before (`after`)."""
    items, after = [], None
    for rid in rids:
        send = room.send(sender, f"m{rid}")
        items.append(encode_send_item(rid, m.Send(envelope=send.envelope, after=after)))
        after = send.envelope.txn
    return encode_sends(rids[0], items)


async def _replies(peer: Peer, count: int) -> dict[int, m.AnyReply]:
    frames = [await peer.reply() for _ in range(count)]
    by_rid = {f.rid: f.msg for f in frames}
    assert len(by_rid) == count, "a request was answered twice"
    return by_rid


async def test_a_sends_frame_is_answered_send_by_send_in_order(setup: Setup) -> None:
    alice, bob, room = await _room(setup)
    welcome = await alice.request(m.Hello(client="t", sends=True))
    assert isinstance(welcome, m.Welcome) and welcome.sends
    plain = await bob.request(m.Hello(client="t"))
    assert isinstance(plain, m.Welcome) and not plain.sends  # only said to who asks
    rids = [100, 101, 102, 103, 104]
    await alice.sock.send(_sends(room, alice.identity, rids))
    frames = [await alice.reply() for _ in rids]
    assert [f.rid for f in frames] == rids  # each answered, in the order sent
    acks = [f.msg for f in frames]
    assert all(isinstance(a, m.SendAck) and not a.duplicate for a in acks), acks
    assert [a.seq for a in acks] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    history = await bob.request(m.History(room=room.name, after=0))
    assert isinstance(history, m.Messages) and len(history.items) == 5


async def test_a_sends_frame_costs_one_refusal_at_most_under_the_rate_limit(
    setup: Setup,
) -> None:
    setup.node.limits = RateLimits(per_connection=4, per_user=1000, burst_seconds=2)
    alice, _, room = await _room(setup)  # alice's bucket holds 8, the room took 2
    rids = list(range(200, 220))
    await alice.sock.send(_sends(room, alice.identity, rids))
    got: dict[int, m.AnyReply] = {}
    refused: int | None = None
    while refused is None or len(got) <= rids.index(refused):
        frame = await alice.reply()
        assert frame.rid not in got, f"{frame.rid} answered twice"
        got[frame.rid] = frame.msg
        if isinstance(frame.msg, m.Error):
            assert refused is None, got  # one refusal for the whole frame
            refused = frame.rid
    # The sends the bucket paid for are acked; the first it could not pay for
    # is refused, and the node reads no further: the client takes that one
    # answer for it and every later send of the frame.
    k = rids.index(refused)
    assert k > 0 and isinstance(got[refused], m.Error) and got[refused].code == "rate_limited"
    assert [r for r in rids if isinstance(got.get(r), m.SendAck)] == rids[:k]
    # With the bucket empty the frame is refused unread: one answer, to its rid.
    await alice.sock.send(_sends(room, alice.identity, [300, 301, 302]))
    unread = await alice.reply()
    assert unread.rid == 300, unread
    assert isinstance(unread.msg, m.Error) and unread.msg.code == "rate_limited"
    await asyncio.sleep(1.0)  # a token again
    assert isinstance(await alice.request(m.Ping(t=5)), m.Pong)  # and nothing else came


async def test_a_sends_frame_of_a_connection_that_does_not_read_is_refused_once(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _, room = await _room(setup)
    monkeypatch.setattr(setup.node.flow, "over_budget", lambda flow: True)
    await alice.sock.send(_sends(room, alice.identity, [500, 501, 502, 503]))
    refused = await alice.reply()
    assert refused.rid == 500 and isinstance(refused.msg, m.Error), refused
    assert refused.msg.code == "rate_limited" and "not read" in refused.msg.message
    assert isinstance(await alice.request(m.Ping(t=5)), m.Pong)  # and nothing else came


async def test_hello_again_is_refused_while_the_node_cannot_reach_its_store(
    setup: Setup,
) -> None:
    alice = setup.peer("alice")
    await alice.register()
    assert isinstance(await alice.request(m.Hello(client="t")), m.Welcome)
    setup.node.store_cut_off = True  # as its store guard sets it
    refused = await alice.request(m.Hello(client="t"))
    assert isinstance(refused, m.Error) and refused.code == "store_unavailable", refused
    setup.node.store_cut_off = False
    assert isinstance(await alice.request(m.Hello(client="t")), m.Welcome)


async def test_a_sends_frame_that_does_not_decode_is_answered_once(setup: Setup) -> None:
    alice, _, room = await _room(setup)
    frame = msgspec.msgpack.decode(_sends(room, alice.identity, [400, 401, 402]))
    frame["req"]["items"][1]["send"] = {"type": "ping", "t": 1}  # only sends belong in one
    await alice.sock.send(msgspec.msgpack.encode(frame))
    refused = await alice.reply()
    assert refused.rid == 400 and isinstance(refused.msg, m.Error), refused
    assert refused.msg.code == "bad_frame"
    assert isinstance(await alice.request(m.Ping(t=5)), m.Pong)  # and nothing else came


NESTED = bytes.fromhex("83a17601a372696407a3726571") + b"\x91" * 100_000 + b"\xc0"
"""`{"v": 1, "rid": 7, "req": [[[... nil ...]]]}`: nested deeper than the
decoder's recursion limit (about 1,000 levels on Python 3.11, 20,000 on 3.13)."""


async def test_a_frame_nested_too_deeply_is_refused_and_costs_no_one_else_anything(
    setup: Setup,
) -> None:
    alice, bob, room = await _room(setup)
    reactor = setup.node._reactor
    assert reactor is not None
    reactor.stop()  # one pass: the nested frame between the others' requests
    ping_rid = await bob.send(m.Ping(t=1))
    await alice.sock.send(NESTED)
    send_rid = await bob.send(room.send(bob.identity, "after it"))
    reactor._handle(await _frames(reactor.sock, 3))
    reactor.start()
    # Its request id cannot be read either (it is beside the nesting): answered to rid 0.
    async with asyncio.timeout(20):
        refused = decode_server_frame(await alice.sock.recv())
    assert isinstance(refused.msg, m.Error) and refused.msg.code == "bad_frame", refused
    replies = {f.rid: f.msg for f in [await bob.reply(), await bob.reply()]}
    assert isinstance(replies[ping_rid], m.Pong)
    assert isinstance(replies[send_rid], m.SendAck)


async def test_a_routing_id_reused_under_another_key_drops_the_old_session(
    setup: Setup,
) -> None:
    """A peer may choose its routing id, and once the connection that had it
    is gone another key may come with it: the session it replaces is
    dropped as if its connection had ended, not left in its user's set."""
    node = setup.node
    first = setup.peer("alice")
    first.sock.close(linger=0)
    for n, who in enumerate(("alice", "mallory")):
        peer = setup.peer(who)
        peer.sock.close(linger=0)
        peer.sock = setup.ctx.socket(zmq.DEALER)
        peer.sock.curve_serverkey = setup.server_key
        peer.sock.curve_publickey = zmq.utils.z85.encode(peer.identity.transport_pub)
        peer.sock.curve_secretkey = zmq.utils.z85.encode(peer.identity.transport_secret)
        peer.sock.routing_id = b"chosen"
        peer.sock.linger = 0
        peer.sock.connect(setup.endpoint)
        await peer.register()
        assert isinstance(await peer.request(m.Hello(client="test")), m.Welcome)
        if n == 0:
            assert b"chosen" in node.by_user["alice"]
        peer.sock.close(linger=0)
        await asyncio.sleep(0.2)  # libzmq lets the id go with the connection
    assert b"chosen" not in node.by_user.get("alice", set())
    assert node.by_user["mallory"] == {b"chosen"}
    assert node.sessions[b"chosen"].user == "mallory"
    await asyncio.sleep(0.5)  # the monitor reports the connections closed
    assert node.gone_sessions == sum(s.gone is not None for s in node.sessions.values())


async def test_a_frame_whose_handling_raises_is_answered_internal_and_the_pass_goes_on(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob, _ = await _room(setup)
    node = setup.node
    real = node.rate_limited

    def broken(sess: Any, now: float, size: int = 0) -> str | None:
        if sess.user == "alice":
            raise RuntimeError("a bug on alice's frames only")
        return real(sess, now, size)

    monkeypatch.setattr(node, "rate_limited", broken)
    reactor = node._reactor
    assert reactor is not None
    reactor.stop()  # one pass: alice's frame between two of bob's
    first = await bob.send(m.Ping(t=1))
    broken_rid = await alice.send(m.Ping(t=2))
    second = await bob.send(m.Ping(t=3))
    reactor._handle(await _frames(reactor.sock, 3))
    reactor.start()
    refused = await alice.reply()
    assert refused.rid == broken_rid and isinstance(refused.msg, m.Error), refused
    assert refused.msg.code == "internal"
    pongs = {f.rid: f.msg for f in [await bob.reply(), await bob.reply()]}
    assert isinstance(pongs[first], m.Pong) and isinstance(pongs[second], m.Pong)


async def test_the_node_keeps_a_bounded_number_of_room_views(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rooms created by the thousand grew the node for good (1.7 KiB each):
    the least recently asked-for views go past ROOMS_KEPT, and a room let go
    is read again from the store when it is asked for."""
    monkeypatch.setattr(rooms_module, "ROOMS_KEPT", 3)
    alice, bob, first = await _room(setup)
    for i in range(5):
        room = Room(alice.identity, f"more-{i}", [bob.identity])
        assert isinstance(await alice.request(room.create), m.RoomChanged)
    assert len(setup.node.rooms._rooms) == 3
    assert setup.node.rooms.peek(first.name) is None
    ack = await alice.request(first.send(alice.identity, "still here"))
    assert isinstance(ack, m.SendAck) and ack.seq == 1
    kept = set(setup.node.rooms._rooms)
    assert first.name in kept
    # Listing her rooms reads no view (the store counts their members): a
    # list of more rooms than the node keeps pushed every view out, and
    # replayed every log at each list.
    listed = await alice.request(m.ListRooms())
    assert isinstance(listed, m.RoomList)
    assert {(r.room, r.members) for r in listed.rooms} >= {(first.name, 2), ("more-0", 2)}
    assert set(setup.node.rooms._rooms) == kept
