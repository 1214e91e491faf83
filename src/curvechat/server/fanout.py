"""The acks and message pushes of one reactor pass, gathered per connection
and sent in as few frames as they fit in.

A connection whose hello said `batch` gets what the pass made for it in
`batch` frames (at most `MAX_BATCH_ITEMS` items and about
`BATCH_BUDGET_BYTES` each), in the order the pass made it, when the pass
calls `flush`; any other connection gets one frame per ack or push at once,
as before. Each push is encoded once for all its receivers, and each frame
is one libzmq send and one CURVE box instead of one per message.

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
    from curvechat.server.node import ChatNode
    from curvechat.server.session import Session
    from curvechat.store import StoredRow


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
        if self.items and (
            self.size + len(item) > L.BATCH_BUDGET_BYTES or len(self.items) >= L.MAX_BATCH_ITEMS
        ):
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


class Fanout:
    __slots__ = ("_node", "_out", "_pending", "_receivers", "_send")

    def __init__(self, node: ChatNode, send: Callable[[bytes, bytes], bool]) -> None:
        self._node = node
        self._send = send
        self._out: dict[int, _Frames] = {}  # id(session) -> its frames
        self._pending = 0  # bytes of every item gathered and not yet sent
        # id(users) -> (users, their connections): a pass pushes many messages
        # to one room's member list, which is looked up once.
        self._receivers: dict[int, tuple[Iterable[str], list[Session]]] = {}

    def _connections(self, users: Iterable[str]) -> list[Session]:
        hit = self._receivers.get(id(users))
        if hit is not None and hit[0] is users:
            return hit[1]
        sessions = self._node.receivers(users)
        self._receivers[id(users)] = (users, sessions)
        return sessions

    def push(self, users: Iterable[str], push: m.AnyReply, *, skip: bytes | None) -> int:
        """Send or queue `push` for every connection of `users` but `skip`
        (only a message push goes into batches); returns how many connections
        it went to."""
        node = self._node
        item = plain = None
        batchable = is_message_push(push)
        sent = 0
        for sess in self._connections(users):
            if sess.routing_id == skip or sess.dropped_ms is not None:
                continue  # (dropped: its routing id may be another connection's now)
            if batchable and sess.batch:
                if item is None:
                    item = encode_item(0, push)  # type: ignore[arg-type]
                frames = self._out.get(id(sess))
                ahead = 0 if frames is None else frames.queued
                if node.withheld(sess, len(item), ahead=ahead, pending=self._pending):
                    continue
                self._queue(sess, item, push=True)
                sent += 1
            else:
                if plain is None:
                    plain = encode_reply(0, push)
                if not node.withheld(sess, len(plain)) and self._send(sess.routing_id, plain):
                    sent += 1
        return sent

    def ack(self, sess: Session, rid: int, ack: m.SendAck) -> None:
        """Answer send `rid` of `sess`."""
        if sess.dropped_ms is not None:
            return  # forgotten: another connection may hold its routing id now
        if not sess.batch:
            self._send(sess.routing_id, encode_reply(rid, ack))
            return
        self._queue(sess, encode_item(rid, ack), push=False)

    def _queue(self, sess: Session, item: bytes, *, push: bool) -> None:
        frames = self._out.get(id(sess))
        if frames is None:
            frames = self._out[id(sess)] = _Frames(sess)
        frames.add(item, push)
        self._pending += len(item)

    def flush(self) -> int:
        """Send what was queued; returns the pushes lost with frames that
        could not be sent (clients fetch them by seq), or whose connection was
        dropped meanwhile (a pass that awaited: its routing id may be another
        connection's now)."""
        lost = 0
        send = self._send
        for frames in self._out.values():
            sess = frames.sess
            for items, pushes in frames.frames():
                if sess.dropped_ms is not None or not send(sess.routing_id, encode_batch(items)):
                    lost += pushes
                    if len(items) > 1:  # the sender counted the frame as one
                        self._node.metrics.pushes_dropped.inc(len(items) - 1)
        self._out.clear()
        self._receivers.clear()
        self._pending = 0
        return lost


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
