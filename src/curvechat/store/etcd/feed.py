"""What a chat node needs of etcd beyond the `Store`: the cluster feed and
the node registry.

* `ClusterFeed` watches the message, registry and room-state keys from a
  revision on and yields typed events, one list per etcd response (all
  events of one transaction come in one response): `MessageCommitted`,
  `RoomChanged`, `PacketStored` (a key packet, for its recipient),
  `NodesChanged`, and `Compacted` when the revision it was
  to resume from is gone (the caller re-lists, then sets `revision`). A
  message whose origin is the feed's `own` (the node's own commits, which
  the node pushed itself) comes as `OwnCommitted`, its room and seq only
  (a run's last): its value is not decoded. A message run (runs.py) comes
  as one `MessageCommitted` a message; a value it cannot decode (written by
  a newer node, or damaged) as `Undecodable`, and the watch goes on.
  `revision` moves past a response's events only when the caller asks for
  the next list, so a stream that breaks halfway gives them all again.
* `NodeRegistry` keeps one key per live node under a lease: grant and put,
  keep alive, rewrite, list, revoke.

Both reach etcd through the store's member pool (a stream on a member
that failed moves to another). The key layout is the store's
(docs/operations.md).

What this module must never do: decide what an event means for clients
(server/watchfan.py does), or hide a broken stream: every failure is
raised as StoreUnavailable, for the caller to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.protocol.errors import UNDECODABLE
from curvechat.store.base import NodeNameTaken, StoredRow, StoreUnavailable
from curvechat.store.etcd import EtcdStore, prefix_end
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.runs import decode_run

_HAS_LEADER = (("hasleader", "true"),)
_PUT = rpc.Event.EventType.PUT  # looked up once, not per event


@dataclass(frozen=True, slots=True)
class MessageCommitted:
    row: StoredRow
    origin: str  # the boot id of the node that committed it


@dataclass(frozen=True, slots=True)
class OwnCommitted:
    room: str  # a message the feed's `own` origin committed: where, not what
    seq: int


@dataclass(frozen=True, slots=True)
class RoomChanged:
    room: str  # its meta changed: membership or epoch


@dataclass(frozen=True, slots=True)
class PacketStored:
    room: str  # a key packet for `recipient` was stored (an epoch's, an add's, or shared late)
    recipient: str


@dataclass(frozen=True, slots=True)
class NodesChanged:
    pass


@dataclass(frozen=True, slots=True)
class Compacted:
    revision: int  # etcd's compacted revision; the feed's own is gone


@dataclass(frozen=True, slots=True)
class Undecodable:
    room: str  # a message value the feed cannot read (skipped): its key's room and seq
    seq: int
    reason: str


FeedEvent = (
    MessageCommitted
    | OwnCommitted
    | RoomChanged
    | PacketStored
    | NodesChanged
    | Compacted
    | Undecodable
)


class ClusterFeed:
    """The watch over ``m/`` .. ``r/`` (see the module docstring)."""

    def __init__(self, store: EtcdStore, revision: int = 0, *, own: str = "") -> None:
        self.store = store
        self.revision = revision  # the last revision whose events were taken
        self.on_created: Callable[[], None] = lambda: None
        # A stored message's value is an array whose last item is its origin:
        # one that ends with this encoding is `own`'s (origins are written by
        # nodes only, as their boot ids, all of one length).
        self._own_tail = rec.enc.encode(own) if own else None

    async def current_revision(self) -> int:
        return await self.store.current_revision()

    async def stream(self) -> AsyncIterator[list[FeedEvent]]:
        """One watch stream from `revision` + 1, until it breaks (raises
        StoreUnavailable) or the revision was compacted (yields [Compacted]
        and ends)."""
        store = self.store
        try:
            watch, _lease = store.stubs
            call = watch.Watch(metadata=_HAS_LEADER)
        except rpc.AioRpcError as exc:
            raise self._broke(exc) from exc
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=store.message_prefix,
                        range_end=prefix_end(store.room_prefix),  # nodes/ is in between
                        start_revision=self.revision + 1,
                        progress_notify=True,
                    )
                )
            )
            async for resp in call:
                if resp.compact_revision:
                    yield [Compacted(int(resp.compact_revision))]
                    return
                if resp.created:
                    self.on_created()
                if resp.canceled:
                    raise StoreUnavailable(f"watch canceled: {resp.cancel_reason}")
                events: list[FeedEvent] = []
                for event in resp.events:
                    self._event(event, events)
                if events:
                    yield events
                if resp.events:
                    self.revision = max(self.revision, int(resp.events[-1].kv.mod_revision))
                elif not resp.created and resp.header.revision:
                    # A progress notification: nothing of ours below it.
                    self.revision = max(self.revision, int(resp.header.revision))
        except rpc.AioRpcError as exc:
            raise self._broke(exc) from exc
        except asyncio.InvalidStateError as exc:  # gRPC: "RPC already finished"
            store.stream_failed()
            raise StoreUnavailable(f"etcd watch: the stream ended: {exc}") from exc
        except StoreUnavailable:
            store.stream_failed()
            raise
        finally:
            call.cancel()

    def _broke(self, exc: rpc.AioRpcError) -> StoreUnavailable:
        self.store.stream_failed()
        return StoreUnavailable(f"etcd watch: {exc.code().name}: {exc.details()}")

    def _event(self, event: Any, out: list[FeedEvent]) -> None:
        """What one watch event says, added to `out`: a message run's
        messages (one event each), or the run's last seq for one of `own`."""
        store = self.store
        key = bytes(event.kv.key)
        if key.startswith(store.message_prefix):
            if event.type != _PUT:
                return
            room, last = store.parse_msg_key(key)
            value = event.kv.value
            if self._own_tail is not None and value.endswith(self._own_tail):
                out.append(OwnCommitted(room, last))
                return
            try:
                rows, origin = decode_run(room, last, bytes(value))
            except UNDECODABLE as exc:  # told, not raised: the watch goes on past it
                out.append(Undecodable(room, last, str(exc)))
                return
            out += [MessageCommitted(row, origin) for row in rows]
        elif key.startswith(store.room_prefix) and key.endswith(b"/meta"):
            out.append(RoomChanged(store.parse_room_key(key)))
        elif b"/pk/" in key and key.startswith(store.room_prefix) and event.type == _PUT:
            packet = store.parse_packet_key(key)
            if packet is not None:
                out.append(PacketStored(*packet))
        elif key.startswith(store.node_prefix):
            out.append(NodesChanged())


CLAIM_TRIES = 5


class NodeRegistry:
    """The live nodes: one key each, under a lease of `ttl` seconds."""

    def __init__(self, store: EtcdStore, name: str, ttl: int) -> None:
        self.store = store
        self.key = store.k_node(name)
        self.ttl = ttl
        self.lease_id = 0

    async def register(
        self, value: bytes, taken: Callable[[bytes], str | None] | None = None
    ) -> None:
        """A new lease, and this node's key under it. With `taken`, the key is
        written only when it is absent or `taken(its value)` is None (an
        earlier life of this node wrote it); else the new lease is revoked
        and NodeNameTaken raised with what `taken` said."""
        store = self.store
        try:
            _watch, lease = store.stubs
            grant = await lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=self.ttl), timeout=store.timeout
            )
        except rpc.AioRpcError as exc:
            store.stream_failed()
            raise StoreUnavailable(f"etcd: {exc.code().name}: {exc.details()}") from exc
        self.lease_id = int(grant.ID)
        try:
            if taken is None:
                await self.update(value)
            else:
                await self._claim(value, taken)
        except asyncio.CancelledError:
            self.lease_id = 0  # it expires within ttl, with the key if it was written
            raise
        except BaseException:
            # No lease left alive without this node's key under it.
            with contextlib.suppress(StoreUnavailable):
                await self.revoke()
            self.lease_id = 0
            raise

    async def _claim(self, value: bytes, taken: Callable[[bytes], str | None]) -> None:
        """Write this node's key under the new lease if it is absent, or if
        it is this node's own (then only if it did not change since read)."""
        store = self.store
        put = rpc.RequestOp(
            request_put=rpc.PutRequest(key=self.key, value=value, lease=self.lease_id)
        )
        for _ in range(CLAIM_TRIES):
            resp = await store._txn(
                [store._version_is(self.key, 0)],
                [put],
                [rpc.RequestOp(request_range=rpc.RangeRequest(key=self.key))],
            )
            if resp.succeeded:
                return
            kvs = resp.responses[0].response_range.kvs
            if not kvs:
                continue  # gone meanwhile
            why = taken(bytes(kvs[0].value))
            if why is not None:
                raise NodeNameTaken(why)
            # An earlier life's entry: taken back only as it was read.
            same = store._mod_is(self.key, int(kvs[0].mod_revision))
            if (await store._txn([same], [put])).succeeded:
                return
        raise StoreUnavailable("node registry: this node's entry kept changing; retrying")

    async def holder(self) -> bytes | None:
        """The entry under this node's name now (None if there is none)."""
        kv = await self.store._get(self.key)
        return None if kv is None else bytes(kv.value)

    async def update(self, value: bytes) -> None:
        """Rewrite this node's key (same lease)."""
        await self.store.put(self.key, value, lease=self.lease_id)

    async def values(self) -> list[bytes]:
        """Every live node's value."""
        return [bytes(kv.value) for kv in await self.store.get_prefix(self.store.node_prefix)]

    async def keep_alive(self, every: float, tick: Callable[[bool], Awaitable[None]]) -> None:
        """Refresh the lease on one keep-alive stream until it breaks (raises
        StoreUnavailable); after each refresh call `tick(alive)`, where
        alive is False when the lease had expired (then register anew)."""
        store = self.store
        try:
            _watch, lease = store.stubs
            call = lease.LeaseKeepAlive()
        except rpc.AioRpcError as exc:
            store.stream_failed()
            raise StoreUnavailable(f"etcd: {exc.code().name}: {exc.details()}") from exc
        try:
            while True:
                # The write too: on a stream whose member was killed it can
                # wait forever, and the lease then runs out unnoticed.
                async with asyncio.timeout(store.timeout):
                    await call.write(rpc.LeaseKeepAliveRequest(ID=self.lease_id))
                    resp = await call.read()
                alive = int(getattr(resp, "TTL", 0)) > 0  # else expired, or the stream ended
                await tick(alive)
                if not alive:
                    return
                await asyncio.sleep(every)
        except (rpc.AioRpcError, TimeoutError, asyncio.InvalidStateError) as exc:
            # InvalidStateError: gRPC's "RPC already finished", a write on a
            # stream whose member went away. Uncaught, it once ended the
            # keep-alive for good and the node dropped out of the registry.
            store.stream_failed()
            raise StoreUnavailable(f"etcd lease keep-alive: {exc!r}") from exc
        finally:
            call.cancel()

    async def revoke(self) -> None:
        if not self.lease_id:
            return
        store = self.store
        try:
            _watch, lease = store.stubs
            await lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=self.lease_id), timeout=store.timeout)
        except rpc.AioRpcError as exc:
            raise StoreUnavailable(f"etcd: {exc.code().name}: {exc.details()}") from exc
