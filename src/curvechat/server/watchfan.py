"""Fan-out from the cluster watch: what a node pushes to its own clients
when the etcd watch shows another node's commit or a room's change.

* One watch (`store.etcd.feed.ClusterFeed`) over the message and
  room-state keys, from the revision the node started at. A message
  committed by ANOTHER node (its value carries the committing node's
  origin) is pushed to this node's online members of the room, the
  messages of one watch answer together; a change of a room's state drops
  the room from the node's RoomCache and tells the members here to
  refetch. The node's own commits are pushed by the request handlers, never
  twice. A registry entry that changed makes the cluster list the nodes
  again (not on this path).
* A cut-off watch resumes from the last revision it processed. If that
  revision was compacted meanwhile, the node re-lists: every room with an
  online member here whose head moved past what the node last saw gets its
  newest message pushed, and the clients fetch the gap by seq (the Clone
  pattern), so nothing is skipped.
* A message value the node cannot decode (a newer node's, or damaged) is
  logged, counted (`curvechat_cluster_undecodable_total`) and passed over:
  one such value does not stop the watch for the messages after it.

What it must never do: write to etcd, push a message this node acked
itself, or stop watching for good (an error is logged and the watch
resumes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

from curvechat.protocol import RemoteProtocolError, decode_member_op
from curvechat.protocol import messages as m
from curvechat.server.metrics import observe_all
from curvechat.server.node import ChatNode
from curvechat.store import StoredRow, StoreError, StoreUnavailable
from curvechat.store.etcd import EtcdStore
from curvechat.store.etcd.feed import (
    ClusterFeed,
    Compacted,
    FeedEvent,
    MessageCommitted,
    NodesChanged,
    OwnCommitted,
    PacketStored,
    RoomChanged,
    Undecodable,
)

log = logging.getLogger("curvechat.server")

RESUME_S = 0.5  # how long a cut watch waits before it resumes


class WatchFanout:
    """Pushes what `feed` shows to `node`'s clients (the module docstring);
    `on_nodes_changed` is called when a registry entry changed (it must not
    block: the watch's messages wait for it)."""

    def __init__(
        self,
        node: ChatNode,
        store: EtcdStore,
        feed: ClusterFeed,
        on_nodes_changed: Callable[[], None],
    ) -> None:
        self.node = node
        self.store = store
        self.feed = feed
        self.on_nodes_changed = on_nodes_changed
        self.relists = 0
        self._seen: dict[str, int] = {}  # room -> highest seq known to this node

    async def run(self) -> None:
        """Watch until cancelled, resuming after each cut."""
        while True:
            try:
                async for events in self.feed.stream():
                    await self._on_events(events)
            except StoreUnavailable as exc:
                log.warning("cluster watch cut off at revision %d: %s", self.feed.revision, exc)
                await asyncio.sleep(RESUME_S)
            except Exception:
                # A bug: say so loudly, and do not let it end fan-out for good.
                log.exception("cluster watch failed at revision %d", self.feed.revision)
                await asyncio.sleep(RESUME_S)

    async def _on_events(self, events: Sequence[FeedEvent]) -> None:
        """One watch answer: its messages pushed together (one frame per
        client that reads batches), in order with its other events."""
        rows: list[StoredRow] = []
        lags: list[float] = []  # of the rows pushed, their lag behind the commit
        now = time.time()
        seen = self._seen
        shared: set[tuple[str, str]] = set()
        changed: set[str] = set()
        for event in events:
            if type(event) is PacketStored:
                shared.add((event.room, event.recipient))
                continue
            if type(event) is RoomChanged:
                changed.add(event.room)
            if type(event) is OwnCommitted:  # acked by this node, which pushed it then
                if event.seq > seen.get(event.room, 0):
                    seen[event.room] = event.seq
                continue
            if not isinstance(event, MessageCommitted):
                await self._push_rows(rows)
                rows = []
                await self._on_event(event)
                continue
            row = event.row
            if row.seq > seen.get(row.room, 0):
                seen[row.room] = row.seq
            if event.origin != self.node.boot:  # else this node's own (a feed without `own`)
                rows.append(row)
                lags.append(max(0.0, now - row.ts_ms / 1000))
        observe_all(self.node.metrics.watch_lag_seconds, lags)
        await self._push_rows(rows)
        self._push_shared(shared, changed)

    def _push_shared(self, shared: set[tuple[str, str]], changed: set[str]) -> None:
        """Key packets (`shared`: room, recipient) stored without a change of
        their room's state are history shared late (`share_keys`, through any
        node): the recipient is told, once per room in this answer, as the
        node that took them told its own connections. Packets stored with a
        membership op or an epoch come with that room's change (`changed`),
        pushed as such."""
        for room, recipient in sorted(shared):
            if room not in changed:
                self.node.push([recipient], m.RoomPush(room=room, reason="keys"))

    async def _on_event(self, event: FeedEvent) -> None:
        match event:
            case RoomChanged(room=room):
                await self._room_changed(room)
            case NodesChanged():
                self.on_nodes_changed()  # a node joined, left or changed its entry
            case Compacted(revision=compacted):
                await self._relist(compacted)  # the stream ended: watch again from there
            case Undecodable(room=room, seq=seq, reason=reason):
                # Not pushed from here; fetched by seq, it fails the same way.
                self.node.metrics.watch_undecodable.inc()
                log.error(
                    "cluster watch: the message value of %r under seq %d cannot be"
                    " decoded (%s); skipped",
                    room,
                    seq,
                    reason,
                )

    async def _push_rows(self, rows: Sequence[StoredRow]) -> None:
        if rows:
            # As stored: a node checked each envelope when it took the send.
            await self.node.push_remote(rows)

    async def _room_changed(self, room: str) -> None:
        view = self.node.rooms.peek(room)
        record = await self.store.room(room)
        if record is None:
            return
        if view is not None and (view.record.op_head, view.record.epoch) == (
            record.op_head,
            record.epoch,
        ):
            return  # this node made the change (its handler pushed) or already knows it
        before = set(view.members()) if view is not None else set()
        fresh = await self.node.rooms.reload(room)
        if fresh is None:
            return
        after = set(fresh.members())
        reason: Literal["epoch", "members"] = (
            "epoch" if view is not None and view.record.epoch != record.epoch else "members"
        )
        self.node.push(sorted(after), m.RoomPush(room=room, reason=reason))
        gone = before - after
        if gone:
            leaver = await self._leaver(room, record.op_head)
            if leaver in gone:  # as the node that took the op says it (handlers.py)
                gone.discard(leaver)
                self.node.push([leaver], m.RoomPush(room=room, reason="left"))
            if gone:
                self.node.push(sorted(gone), m.RoomPush(room=room, reason="removed"))

    async def _leaver(self, room: str, index: int) -> str | None:
        """Who left `room` by its op `index`, if that op is a leave."""
        try:
            ops = await self.store.ops(room, after=index - 1)
            op = decode_member_op(ops[0].op) if ops and ops[0].index == index else None
        except (StoreError, RemoteProtocolError):
            return None  # told as a removal: the room is hidden all the same
        return op.target if op is not None and op.kind == "leave" else None

    async def _relist(self, compacted: int) -> None:
        """Our revision was compacted: find what we may have missed from the
        store itself, then watch on from the revision we read it at."""
        self.relists += 1
        self.node.metrics.watch_relists.inc()
        log.warning(
            "cluster watch: revision %d was compacted (now %d); re-listing",
            self.feed.revision,
            compacted,
        )
        revision = await self.feed.current_revision()
        rooms: set[str] = set()
        for user in list(self.node.by_user):
            rooms.update(r.room for r in await self.store.rooms_of(user))
        for room in sorted(rooms):
            self.node.rooms.forget(room)
            rows = await self.store.messages(room, limit=1)
            if rows and rows[-1].seq > self._seen.get(room, 0):
                self._seen[room] = rows[-1].seq
                # Pushing the newest message is enough: a client fills the gap
                # between its cursor and this seq from the store.
                await self._push_rows(rows[-1:])
        self.feed.revision = revision
