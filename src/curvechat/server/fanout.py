"""The acks and message pushes of one reactor pass, gathered per connection
and sent in as few frames as they fit in.

A connection whose hello said `batch` gets what the pass made for it in
`batch` frames (at most `MAX_BATCH_ITEMS` items and about
`BATCH_BUDGET_BYTES` each) when the pass calls `flush`: each room's pushes
in the order made, and each ack after every push the pass made before it;
any other connection gets one frame per ack or push at once, as before.
Each push is encoded once for all its receivers, and each frame is one
libzmq send and one CURVE box instead of one per message.

Most receivers of a pass are acked nothing in it: those of a room share
its frames (a `_Stream`: the room's pushes, encoded into frames once and
sent as they are to each such connection, flow control cutting one
connection's run short where it must), so a push costs one encoding, not
a step per member. A connection the pass acks, or skips as a push's
sender, gets frames of its own from then on, holding what its rooms'
streams had for it first (room after room), so it still sees each ack
after every push made before it; so does, at the flush, one that reads several
rooms of the pass (one frame for them all, not one per room). Once a
push of a room is withheld from a connection, so are the room's later
pushes of the pass: no connection gets a later push without the earlier.

This module must never decide who receives what (the caller names the
members; the node's flow control withholds pushes from connections that do
not read, counting what this pass already queued for them) and never send
anything but acks and message pushes: errors and other replies go out alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from curvechat.protocol import (
    encode_batch,
    encode_item,
    encode_reply,
    is_message_push,
    message_push,
)
from curvechat.protocol import limits as L
from curvechat.protocol import messages as m

if TYPE_CHECKING:
    from curvechat.server.flow import Scope
    from curvechat.server.node import ChatNode
    from curvechat.server.session import Session
    from curvechat.store import StoredRow


def _frame_full(count: int, size: int, add: int) -> bool:
    """Whether a frame of `count` items and `size` bytes must be sent before
    an item of `add` bytes joins it (at least one item a frame)."""
    return count > 0 and (size + add > L.BATCH_BUDGET_BYTES or count >= L.MAX_BATCH_ITEMS)


@dataclass(slots=True)
class _Frames:
    """What one connection gets from a pass: full frames, and the open one."""

    sess: Session
    full: list[tuple[list[bytes], int]] = field(default_factory=list)  # (items, pushes)
    items: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes of `items`
    pushes: int = 0  # pushes among `items`
    queued: int = 0  # bytes of every item so far (for flow control)

    def add(self, item: bytes, push: bool) -> None:
        if _frame_full(len(self.items), self.size, len(item)):
            self.full.append((self.items, self.pushes))
            self.items, self.size, self.pushes = [], 0, 0
        self.items.append(item)
        self.size += len(item)
        self.pushes += push
        self.queued += len(item)

    def frames(self) -> Iterable[tuple[list[bytes], int]]:
        yield from self.full
        if self.items:
            yield self.items, self.pushes


@dataclass(slots=True)
class _Stream:
    """The message pushes of one member list in a pass. The connections in
    `shared` get every one of them, in the same frames, encoded once; a
    connection leaves `shared` for frames of its own (`Fanout._own`) as soon
    as the pass acks it or skips it."""

    shared: dict[bytes, Session]  # routing id -> batch connection getting every push
    own: list[Session]  # batch connections with frames of their own
    plain: list[Session]  # connections without batch frames
    items: list[bytes] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # each item's end in bytes from the first
    cut: dict[int, Scope] = field(default_factory=dict)  # id(session): why a push was withheld

    def add(self, item: bytes) -> None:
        self.ends.append((self.ends[-1] if self.ends else 0) + len(item))
        self.items.append(item)

    def cuts(self) -> list[int]:
        """Where the frames end (item counts), by `_Frames.add`'s rule."""
        cuts, start, count, before = [], 0, 0, 0  # `before`: the end of the item before
        for i, end in enumerate(self.ends):
            if _frame_full(count, before - start, end - before):
                cuts.append(i)
                start, count = before, 0
            count += 1
            before = end
        cuts.append(len(self.ends))
        return cuts


class Fanout:
    __slots__ = ("_lost", "_node", "_out", "_pending", "_send", "_shared_in", "_streams")

    def __init__(self, node: ChatNode, send: Callable[[bytes, bytes], bool]) -> None:
        self._node = node
        self._send = send
        self._out: dict[int, _Frames] = {}  # id(session) -> its own frames
        self._pending = 0  # bytes gathered for frames of their own, not yet sent
        # id(users) -> the member list's stream: a pass pushes many messages to
        # one room's member list, whose connections are looked up once.
        self._streams: dict[int, tuple[Iterable[str], _Stream]] = {}
        # id(session) -> the session and the streams it shares
        self._shared_in: dict[int, tuple[Session, list[_Stream]]] = {}
        self._lost = 0  # pushes counted as sent, then not queued

    def _stream(self, users: Iterable[str]) -> _Stream:
        hit = self._streams.get(id(users))
        if hit is not None and hit[0] is users:
            return hit[1]
        stream = _Stream({}, [], [])
        for sess in self._node.receivers(users):
            if not sess.batch:
                stream.plain.append(sess)
            elif id(sess) in self._out:
                stream.own.append(sess)
            elif sess.routing_id not in stream.shared:  # (a list naming a user twice)
                stream.shared[sess.routing_id] = sess
                self._shared_in.setdefault(id(sess), (sess, []))[1].append(stream)
        self._streams[id(users)] = (users, stream)
        return stream

    def push(self, users: Iterable[str], push: m.AnyReply, *, skip: bytes | None) -> int:
        """Send or queue `push` for every connection of `users` but `skip`
        (only a message push goes into batches); returns how many connections
        it went to (those it was queued for: `flush` counts what is then
        withheld or lost)."""
        stream = self._stream(users)
        sent = 0
        if is_message_push(push):
            item = encode_item(0, push)  # type: ignore[arg-type]
            if skip is not None and skip in stream.shared:
                self._own(stream.shared[skip])
            stream.add(item)
            sent += len(stream.shared)
            for sess in stream.own:
                if sess.routing_id != skip and self._queue_push(sess, item, stream):
                    sent += 1
            others = stream.plain
        else:
            others = [*stream.plain, *stream.own, *stream.shared.values()]
        plain = None
        for sess in others:
            if sess.routing_id == skip or sess.dropped_ms is not None:
                continue  # (dropped: its routing id may be another connection's now)
            if plain is None:
                plain = encode_reply(0, push)
            if self._node.withheld(sess, len(plain)) is None and self._send(sess.routing_id, plain):
                sent += 1
        return sent

    def ack(self, sess: Session, rid: int, ack: m.SendAck) -> None:
        """Answer send `rid` of `sess`."""
        if sess.dropped_ms is not None:
            return  # forgotten: another connection may hold its routing id now
        if not sess.batch:
            self._send(sess.routing_id, encode_reply(rid, ack))
            return
        if id(sess) in self._shared_in:
            self._own(sess)
        self._queue(sess, encode_item(rid, ack), push=False)

    def _own(self, sess: Session) -> None:
        """`sess` gets frames of its own from now on: first the pushes its
        streams hold so far, then its acks and pushes in the order made."""
        for stream in self._shared_in.pop(id(sess))[1]:
            del stream.shared[sess.routing_id]
            for item in stream.items:
                if not self._queue_push(sess, item, stream):
                    self._lost += 1  # counted as sent when it was pushed
            stream.own.append(sess)

    def _queue_push(self, sess: Session, item: bytes, stream: _Stream) -> bool:
        """Queue a push of `stream`'s room for `sess`, unless flow control
        withholds it, or withheld an earlier one of the room in this pass (a
        connection never gets a later push without the earlier ones)."""
        if sess.dropped_ms is not None:
            return False  # (dropped: its routing id may be another connection's now)
        scope = stream.cut.get(id(sess))
        if scope is not None:
            self._node.note_withheld(scope, 1)
            return False
        frames = self._out.get(id(sess))
        ahead = 0 if frames is None else frames.queued
        scope = self._node.withheld(sess, len(item), ahead=ahead, pending=self._pending)
        if scope is not None:
            stream.cut[id(sess)] = scope
            return False
        self._queue(sess, item, push=True)
        return True

    def _queue(self, sess: Session, item: bytes, *, push: bool) -> None:
        frames = self._out.get(id(sess))
        if frames is None:
            frames = self._out[id(sess)] = _Frames(sess)
        frames.add(item, push)
        self._pending += len(item)

    def flush(self) -> int:
        """Send what was queued; returns the pushes lost with frames that
        could not be sent (clients fetch them by seq), withheld at the flush,
        or whose connection was dropped meanwhile (a pass that awaited: its
        routing id may be another connection's now)."""
        # A connection reading several rooms of the pass gets them in frames
        # of its own (items encoded once, the frames per connection): one
        # frame per room for a user in hundreds of rooms would cost a send
        # and a CURVE box each.
        for sess, streams in list(self._shared_in.values()):
            if sum(1 for stream in streams if stream.items) > 1:
                self._own(sess)
        lost, self._lost = self._lost, 0
        for frames in self._out.values():
            sess = frames.sess
            for items, pushes in frames.frames():
                lost += self._send_batch(sess, len(items), encode_batch(items), pushes)
        for _, stream in self._streams.values():
            if stream.shared and stream.items:
                lost += self._send_stream(stream)
        self._out.clear()
        self._streams.clear()
        self._shared_in.clear()
        self._pending = 0
        return lost

    def _send_stream(self, stream: _Stream) -> int:
        """Each shared connection gets the stream's frames, as many pushes as
        its flow control lets through (`FlowControl.room_for`)."""
        lost = 0
        cuts = stream.cuts()
        encoded: list[bytes | None] = [None] * len(cuts)
        for sess in stream.shared.values():
            if sess.dropped_ms is not None:
                lost += len(stream.items)
                continue
            room = self._node.room_for(sess, stream.ends)
            lost += len(stream.items) - room
            start = 0
            for i, cut in enumerate(cuts):
                if start >= room:
                    break
                end = min(cut, room)
                frame = encoded[i] if end == cut else None
                if frame is None:
                    frame = encode_batch(stream.items[start:end])
                    if end == cut:
                        encoded[i] = frame
                lost += self._send_batch(sess, end - start, frame)
                start = cut
        return lost

    def _send_batch(
        self, sess: Session, items: int, frame: bytes, pushes: int | None = None
    ) -> int:
        """Send one batch frame of `items` items (`pushes` of them pushes:
        all, unless said); returns the pushes lost with it."""
        if sess.dropped_ms is None and self._send(sess.routing_id, frame):
            return 0
        if items > 1:  # the sender counted the frame as one
            self._node.metrics.pushes_dropped.inc(items - 1)
        return items if pushes is None else pushes


async def push_remote(node: ChatNode, rows: Sequence[StoredRow]) -> int:
    """Push messages that ANOTHER node committed (learned from the cluster
    watch or a node link) to `node`'s online members of their rooms, in the
    order given, their envelopes as stored; returns how many pushes went
    out. A node's own commits are pushed by the reactor and the handlers."""
    members: dict[str, list[str] | None] = {}  # room -> its members (None: no such room)
    out = node.fanout()
    sent = 0
    try:
        for row in rows:
            room = row.room
            if room not in members:
                view = await node.rooms.get(room)
                members[room] = None if view is None else view.members()
            who = members[room]
            if who is not None:
                push = message_push(room, row.seq, row.ts_ms, row.envelope)
                sent += out.push(who, push, skip=None)
    finally:  # what was gathered goes out, also when a room could not be read
        sent -= out.flush()
        node.metrics.messages_delivered.inc(sent)
    return sent
