"""The fan-out of one reactor pass (server/fanout.py), without sockets: who
gets `batch` frames and who plain ones, how batches are cut, what flow
control sees, and what a failed send loses."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import msgspec
import pytest

from curvechat.protocol import decode_server_frame, encode_item
from curvechat.protocol import limits as L
from curvechat.protocol import messages as m
from curvechat.server.fanout import Fanout
from curvechat.server.flow import FlowControl
from curvechat.server.session import Session

TXN = "txn-00000001"


def _push(seq: int, ct: int = 48) -> m.MessagePush:
    env = m.Envelope(
        room="general",
        epoch=0,
        sender="alice",
        txn=f"txn-{seq:08d}",
        nonce=bytes(24),
        ct=b"c" * ct,
        sig=bytes(64),
    )
    return m.MessagePush(room="general", message=m.StoredMessage(seq=seq, ts=1, envelope=env))


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class FakeNode:
    """What Fanout asks of the node: its connections and its flow control."""

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow
        self.by_user: dict[str, list[Session]] = {}
        self.metrics = SimpleNamespace(pushes_dropped=Counter())
        self.withheld_pushes = 0

    def add(self, user: str, rid: bytes, *, batch: bool) -> Session:
        sess = Session(routing_id=rid, transport_key="k", user=user, batch=batch)
        self.by_user.setdefault(user, []).append(sess)
        return sess

    def receivers(self, users: Iterable[str]) -> list[Session]:
        return [sess for user in users for sess in self.by_user.get(user, [])]

    def withheld(self, sess: Session, size: int, *, ahead: int = 0, pending: int = 0) -> str | None:
        scope = self.flow.refuse_push(sess.flow, size, ahead=ahead, pending=pending)
        self.withheld_pushes += scope is not None
        return scope

    def note_withheld(self, scope: str, count: int) -> None:
        self.withheld_pushes += count

    def room_for(self, sess: Session, ends: list[int]) -> int:
        room = self.flow.room_for(sess.flow, ends)[0]
        self.withheld_pushes += len(ends) - room
        return room


class Wire:
    """The sends Fanout makes, decoded; `refuse` makes sends to a peer fail."""

    def __init__(self, flow: FlowControl, node: FakeNode) -> None:
        self.frames: list[tuple[bytes, m.ServerFrame]] = []
        self.refuse: set[bytes] = set()
        self.flow, self.node = flow, node

    def send(self, rid: bytes, data: bytes) -> bool:
        if rid in self.refuse:
            return False
        self.frames.append((rid, decode_server_frame(data)))
        for sessions in self.node.by_user.values():
            for sess in sessions:
                if sess.routing_id == rid:
                    self.flow.queued(sess.flow, len(data))
        return True

    def to(self, rid: bytes) -> list[m.ServerFrame]:
        return [f for r, f in self.frames if r == rid]

    def pushed(self, rid: bytes) -> list[int]:
        """The seqs of the pushes in the batch frames `rid` got, in order."""
        items = [i for f in self.to(rid) for i in f.msg.items]  # type: ignore[union-attr]
        return [i.msg.message.seq for i in items if not i.rid]


def _parts(flow: FlowControl) -> tuple[FakeNode, Wire, Fanout]:
    node = FakeNode(flow)
    wire = Wire(flow, node)
    return node, wire, Fanout(node, wire.send)  # type: ignore[arg-type]


@pytest.fixture
def parts() -> tuple[FakeNode, Wire, Fanout]:
    return _parts(FlowControl())


def test_batch_readers_get_one_frame_in_order_and_others_one_per_item(
    parts: tuple[FakeNode, Wire, Fanout],
) -> None:
    node, wire, out = parts
    alice = node.add("alice", b"a", batch=True)
    node.add("bob", b"b", batch=False)
    node.add("carol", b"c", batch=True)
    room = ["alice", "bob", "carol"]  # one list for the room's pushes, as the callers do
    for seq in (1, 2, 3):
        assert out.push(room, _push(seq), skip=b"a") == 2
        out.ack(alice, 10 + seq, m.SendAck(room="general", txn=TXN, seq=seq, ts=1))
    # plain frames went out at once; batches wait for the flush
    assert [f.msg for f in wire.to(b"b")] == [_push(1), _push(2), _push(3)]
    assert wire.to(b"a") == wire.to(b"c") == []
    assert out.flush() == 0
    (frame,) = wire.to(b"a")
    assert frame.rid == 0 and isinstance(frame.msg, m.Batch)
    assert [(i.rid, type(i.msg)) for i in frame.msg.items] == [
        (11, m.SendAck),
        (12, m.SendAck),
        (13, m.SendAck),
    ]
    (frame,) = wire.to(b"c")
    assert isinstance(frame.msg, m.Batch)
    assert [i.msg for i in frame.msg.items] == [_push(1), _push(2), _push(3)]
    assert all(i.rid == 0 for i in frame.msg.items)
    assert out.flush() == 0 and len(wire.frames) == 5  # nothing is sent twice


def test_batches_are_cut_by_count_and_by_bytes(parts: tuple[FakeNode, Wire, Fanout]) -> None:
    node, wire, out = parts
    bob = node.add("bob", b"b", batch=True)
    for seq in range(1, L.MAX_BATCH_ITEMS + 2):  # acks are small: the count cuts
        out.ack(bob, seq, m.SendAck(room="general", txn=TXN, seq=seq, ts=1))
    for seq in range(5000, 5009):  # the largest messages there are: the bytes cut
        out.push(["bob"], _push(seq, ct=L.MAX_CIPHERTEXT_BYTES), skip=None)
    out.flush()
    frames = [f.msg for f in wire.to(b"b")]
    assert all(isinstance(f, m.Batch) for f in frames)
    batches = [f.items for f in frames]  # type: ignore[union-attr]
    assert len(batches[0]) == L.MAX_BATCH_ITEMS
    assert [i.rid for items in batches for i in items if i.rid] == [
        *range(1, L.MAX_BATCH_ITEMS + 2)
    ]
    seqs = [i.msg.seq if i.rid else i.msg.message.seq for items in batches for i in items]  # type: ignore[union-attr]
    assert seqs == [*range(1, L.MAX_BATCH_ITEMS + 2), *range(5000, 5009)]
    for items in batches:
        size = sum(len(encode_item(i.rid, i.msg)) for i in items)
        assert size <= L.BATCH_BUDGET_BYTES
    assert [len(items) for items in batches] == [L.MAX_BATCH_ITEMS, 4, 3, 3]


def test_flow_control_counts_what_the_pass_already_queued() -> None:
    node, wire, out = _parts(FlowControl(per_connection=64 * 1024, node=1 << 30, mark_every=8192))
    bob = node.add("bob", b"b", batch=True)
    room = ["bob"]
    assert [out.push(room, _push(seq, ct=10_000), skip=None) for seq in range(1, 11)] == [1] * 10
    # 64 KiB holds six of these: the rest is withheld at the flush
    assert out.flush() == 4
    assert bob.flow.withheld
    (frame,) = wire.to(b"b")
    assert [i.msg.message.seq for i in frame.msg.items] == [1, 2, 3, 4, 5, 6]  # type: ignore[union-attr]


def test_a_frame_that_cannot_be_sent_counts_its_pushes_as_lost(
    parts: tuple[FakeNode, Wire, Fanout],
) -> None:
    node, wire, out = parts
    bob = node.add("bob", b"b", batch=True)
    node.add("carol", b"c", batch=True)
    wire.refuse.add(b"b")
    room = ["bob", "carol"]
    out.push(room, _push(1), skip=None)
    out.push(room, _push(2), skip=None)
    out.ack(bob, 7, m.SendAck(room="general", txn=TXN, seq=3, ts=1))
    assert out.flush() == 2  # bob's two pushes (his ack is not a push)
    assert len(wire.to(b"c")) == 1
    # the sender counts one dropped frame; the other two items are counted here
    assert node.metrics.pushes_dropped.value == 2


def test_the_node_wide_budget_counts_what_the_pass_gathered_for_everyone() -> None:
    node, _, out = _parts(FlowControl(per_connection=64 * 1024, node=96 * 1024, mark_every=8192))
    flow = node.flow
    room = ["bob", "carol", "dave"]
    for user in room:  # each acked first: frames of their own, gathered before the flush
        sess = node.add(user, user.encode(), batch=True)
        out.ack(sess, 1, m.SendAck(room="general", txn=TXN, seq=1, ts=1))
    sent = [out.push(room, _push(seq, ct=8_000), skip=None) for seq in range(1, 9)]
    # Nothing is sent before the flush: the node's backlog is still 0, yet once
    # the pass holds 96 KiB for all of them, a connection holding more than a
    # mark's worth gets no more (each still holds less than its own 64 KiB).
    assert sum(sent) < 3 * 8
    assert flow.node_limited
    out.flush()
    assert flow.backlog <= 96 * 1024 + 3 * 8_200


def test_the_node_wide_budget_cuts_the_frames_every_reader_shares() -> None:
    """Connections the pass neither acks nor skips share the room's frames:
    each gets as many of the pushes as the budgets let through, from the
    first, never a later one without an earlier one."""
    node, wire, out = _parts(FlowControl(per_connection=64 * 1024, node=96 * 1024, mark_every=8192))
    flow = node.flow
    room = ["bob", "carol", "dave"]
    for user in room:
        node.add(user, user.encode(), batch=True)
    assert [out.push(room, _push(seq, ct=8_000), skip=None) for seq in range(1, 9)] == [3] * 8
    lost = out.flush()
    assert flow.node_limited
    assert flow.backlog <= 96 * 1024 + 3 * 8_200
    got = {rid: wire.pushed(rid) for rid in (b"bob", b"carol", b"dave")}
    # bob gets the 7 his own 64 KiB hold; the node then holds about 57 KiB of
    # its 96: carol gets the 4 that fit under it, and dave, the node full,
    # the one a connection holding no more than a mark's worth still gets.
    assert got == {b"bob": [1, 2, 3, 4, 5, 6, 7], b"carol": [1, 2, 3, 4], b"dave": [1]}
    assert lost == 3 * 8 - 12


def test_a_forgotten_session_is_not_acked(parts: tuple[FakeNode, Wire, Fanout]) -> None:
    """Its routing id may belong to another connection now (a peer chooses
    its id): an ack still due to it goes nowhere."""
    node, wire, out = parts
    old = node.add("alice", b"a", batch=False)
    old.dropped_ms = 1
    out.ack(old, 7, m.SendAck(room="general", txn=TXN, seq=1, ts=1))
    assert out.flush() == 0 and wire.to(b"a") == []


def test_a_session_dropped_while_the_pass_waited_gets_nothing_more(
    parts: tuple[FakeNode, Wire, Fanout],
) -> None:
    """A pass that awaits between rooms (push_remote reads a room's view)
    keeps what it queued and the room's connections: a connection dropped
    meanwhile, whose routing id a new connection took (a peer chooses its
    id), gets neither the frames queued for it nor the room's later pushes;
    the new one gets only what was pushed to it."""
    node, wire, out = parts
    old = node.add("alice", b"a", batch=True)
    node.add("bob", b"b", batch=True)
    assert out.push(["alice", "bob"], _push(1), skip=None) == 2
    old.dropped_ms = 1  # meanwhile: alice's connection goes, mallory takes "a"
    node.by_user["alice"].remove(old)
    mallory = node.add("mallory", b"a", batch=True)
    assert out.push(["alice", "bob"], _push(2), skip=None) == 1
    assert out.push(["mallory"], _push(3), skip=None) == 1
    assert out.flush() == 1  # alice's first push, lost with her connection
    pushed = [
        (rid, item.msg.message.seq)
        for rid, frame in wire.frames
        for item in frame.msg.items  # type: ignore[union-attr]
    ]
    assert sorted(pushed) == [(b"a", 3), (b"b", 1), (b"b", 2)]
    assert mallory.dropped_ms is None


def test_a_reader_acked_in_the_pass_gets_what_was_pushed_before_its_ack(
    parts: tuple[FakeNode, Wire, Fanout],
) -> None:
    """A connection shares the room's frames until the pass acks it: from
    then on its frames are its own, and they hold the pushes gathered before
    the ack, the ack, and the later pushes, in that order (a client must not
    see its own seq acked after a later push, nor the reverse)."""
    node, wire, out = parts
    bob = node.add("bob", b"b", batch=True)
    node.add("carol", b"c", batch=True)
    room = ["bob", "carol"]
    out.push(room, _push(1), skip=None)
    out.push(room, _push(2), skip=None)
    out.ack(bob, 7, m.SendAck(room="general", txn=TXN, seq=3, ts=1))
    out.push(room, _push(3), skip=b"b")  # bob's own message: not to him
    out.push(room, _push(4), skip=None)
    assert out.flush() == 0
    ((frame,),) = [wire.to(b"b")]
    got = [(i.rid, i.msg.seq if i.rid else i.msg.message.seq) for i in frame.msg.items]  # type: ignore[union-attr]
    assert got == [(0, 1), (0, 2), (7, 3), (0, 4)]
    ((frame,),) = [wire.to(b"c")]
    assert [i.msg.message.seq for i in frame.msg.items] == [1, 2, 3, 4]  # type: ignore[union-attr]


def test_the_readers_of_a_room_get_one_frame_encoded_once() -> None:
    node = FakeNode(FlowControl())
    sent: list[tuple[bytes, bytes]] = []
    out = Fanout(node, lambda rid, data: sent.append((rid, data)) or True)  # type: ignore[arg-type]
    room = [f"user{i}" for i in range(50)]
    for i, user in enumerate(room):
        node.add(user, b"r%d" % i, batch=True)
    for seq in range(1, 21):
        assert out.push(room, _push(seq), skip=b"r0") == 49
    assert out.flush() == 0
    frames = {rid: data for rid, data in sent}
    assert len(sent) == 49 and b"r0" not in frames  # one frame each; none to the sender
    assert len({id(data) for _, data in sent}) == 1  # one encoding, sent to 49 connections
    frame = decode_server_frame(frames[b"r1"])
    assert [i.msg.message.seq for i in frame.msg.items] == list(range(1, 21))  # type: ignore[union-attr]


def _room_push(room: str, seq: int, ct: int = 48) -> m.MessagePush:
    push = _push(seq, ct)
    env = msgspec.structs.replace(push.message.envelope, room=room)
    return m.MessagePush(room=room, message=m.StoredMessage(seq=seq, ts=1, envelope=env))


def test_a_reader_of_many_rooms_gets_one_frame_for_the_pass(
    parts: tuple[FakeNode, Wire, Fanout],
) -> None:
    """Shared frames are per room: a user in 300 rooms that each have a
    message in the pass would get 300 frames (a send and a CURVE box each).
    Such a reader gets frames of its own, as many as the bytes ask for."""
    node, wire, out = parts
    node.add("hub", b"hub", batch=True)
    for i in range(300):
        peer = node.add(f"p{i}", b"p%d" % i, batch=True)
        room = [f"p{i}", "hub"]
        assert out.push(room, _room_push(f"dm{i}", 1), skip=peer.routing_id) == 1
        out.ack(peer, 1, m.SendAck(room=f"dm{i}", txn=TXN, seq=1, ts=1))
    assert out.flush() == 0
    (frame,) = wire.to(b"hub")
    assert sorted(i.msg.room for i in frame.msg.items) == sorted(f"dm{i}" for i in range(300))  # type: ignore[union-attr]


def test_a_connection_acked_late_gets_no_push_after_one_withheld_in_the_room() -> None:
    node, wire, out = _parts(FlowControl(per_connection=64 * 1024, node=1 << 30, mark_every=8192))
    bob = node.add("bob", b"b", batch=True)
    node.add("carol", b"c", batch=True)
    room = ["bob", "carol"]
    for seq, ct in ((1, 30_000), (2, 30_000), (3, 30_000), (4, 2_000)):
        out.push(room, _push(seq, ct=ct), skip=None)
    out.ack(bob, 7, m.SendAck(room="other", txn=TXN, seq=1, ts=1))  # his own, elsewhere
    out.flush()
    for rid in (b"b", b"c"):
        assert wire.pushed(rid) == [1, 2]  # never 4 without 3
    assert node.withheld_pushes == 4  # 3 and 4, to each: each counted


def test_readers_that_share_frames_spend_no_budget_of_a_connection_with_its_own() -> None:
    """Stalled readers are withheld at the flush by their own budgets: what
    the pass gathered for them must not count against the node's budget
    for a connection that reads (frames of its own, judged as gathered)."""
    flow = FlowControl(per_connection=128 * 1024, node=6 * 1024 * 1024, mark_every=8192)
    node, wire, out = _parts(flow)
    room = ["alice"]
    alice = node.add("alice", b"alice", batch=True)
    for i in range(40):  # connections that stopped reading: at their own budget
        stalled = node.add(f"s{i}", b"s%d" % i, batch=True)
        flow.queued(stalled.flow, 128 * 1024)
        room.append(f"s{i}")
    flow.queued(alice.flow, 16 * 1024)
    out.ack(alice, 1, m.SendAck(room="general", txn=TXN, seq=1, ts=1))
    for seq in range(2, 12):
        out.push(room, _push(seq, ct=8_000), skip=None)
    out.flush()
    assert wire.pushed(b"alice") == list(range(2, 12))
    assert not flow.node_limited


def test_a_member_list_naming_a_user_twice_pushes_to_each_connection_once(
    parts: tuple[FakeNode, Wire, Fanout],
) -> None:
    node, wire, out = parts
    bob = node.add("bob", b"b", batch=True)
    node.add("carol", b"c", batch=True)
    room = ["bob", "carol", "bob"]
    out.push(room, _push(1), skip=None)
    out.ack(bob, 7, m.SendAck(room="general", txn=TXN, seq=2, ts=1))
    out.push(room, _push(3), skip=b"b")
    assert out.flush() == 0
    ((frame,),) = [wire.to(b"b")]
    assert [(i.rid, i.msg.seq if i.rid else i.msg.message.seq) for i in frame.msg.items] == [  # type: ignore[union-attr]
        (0, 1),
        (7, 2),
    ]
