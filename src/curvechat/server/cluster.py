"""Cluster mode: what a node does when its store is etcd.

* Registry: the node puts its connect string, status and client count
  under ``<prefix>nodes/<name>`` with a lease it keeps alive; a node that
  dies drops out when the lease expires. `members()` lists the live nodes;
  the node re-reads them when the watch shows an entry change (a node come
  or gone, a status or a count rewritten) and with every keep-alive, and
  names them in each client's welcome, so clients learn the nodes their
  connect string did not list. It sends clients home, or to nodes with
  fewer, by those counts (server/homing.py).
* Fan-out: one etcd watch over the message and room-state keys, from the
  revision the node started at (server/watchfan.py).
* Room ownership and forwarding over the node link (server/nodelink.py),
  and moving clients away while etcd is out of reach or slow
  (server/storeguard.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from curvechat.protocol.connect import ConnectStringError, parse_connect
from curvechat.protocol.limits import MAX_PEERS
from curvechat.server.homing import Homing, signed_in
from curvechat.server.node import ChatNode
from curvechat.server.nodelink import NodeLink
from curvechat.server.storeguard import StoreGuard
from curvechat.server.watchfan import WatchFanout
from curvechat.store import NodeNameTaken, StoreRefused, StoreUnavailable
from curvechat.store.etcd import EtcdStore
from curvechat.store.etcd.feed import (
    ClusterFeed,
    NodeRegistry,
)
from curvechat.store.etcd.health import SLOW_RTT_S, EtcdProbe

log = logging.getLogger("curvechat.server")

LEASE_TTL_S = 10
T = TypeVar("T")
RETRY_S = 0.5
REBALANCE_AFTER_S = 30.0
"""A node sends clients back to another node once it has been up this long."""
START_RETRY_S = 30.0  # how long a starting node retries what etcd briefly refuses


class NodeInfo(msgspec.Struct, frozen=True):
    name: str
    connect: str
    status: str
    started_ms: int
    http: str = ""  # base URL of the node's dashboard and API ("" if it serves none)
    link: str = ""  # the node link's endpoint (server/nodelink.py), "" if it has none
    clients: int = -1  # its connected clients, as last published (-1: an older node)
    runs: bool = False  # it reads message runs (store/etcd/runs.py); False: an older node


_node_dec = msgspec.msgpack.Decoder(NodeInfo)


async def refuse_a_taken_name(store: EtcdStore, name: str, key: bytes) -> None:
    """NodeNameTaken if another live node's registry entry holds `name`:
    checked before the node binds a port or writes its connect string.
    Registering checks again, atomically: a node that takes the name in
    between is found then, after this node has bound its port."""
    value = await NodeRegistry(store, name, LEASE_TTL_S).holder()
    why = None if value is None else _held_by_another(value, name, key)
    if why is not None:
        raise NodeNameTaken(why)


def _held_by_another(value: bytes, name: str, key: bytes) -> str | None:
    """Why the registry entry `value` under `name` is another node's (None
    when an earlier life of the node with CURVE key `key` wrote it: the same
    data folder, restarted before its lease ran out)."""
    try:
        other = _node_dec.decode(value)
    except msgspec.DecodeError:
        return None  # no node wrote that: take the name over
    if _key_of(other.connect) == key:
        return None
    return (
        f"node name {name!r} is registered in etcd by another live node"
        f" ({other.connect}); give this node another --node-name, or stop that node"
        f" (its entry goes at most {LEASE_TTL_S} s after it stops)"
    )


def _key_of(connect: str) -> bytes:
    """The z85 CURVE key in a node's registered connect string (b"" if none)."""
    try:
        return parse_connect(connect)[0].server_key.encode()
    except ConnectStringError:
        return b""


class Cluster:
    def __init__(
        self,
        node: ChatNode,
        store: EtcdStore,
        connect: str,
        *,
        http: str = "",
        link_bind: str | None = None,
        link_advertise: str | None = None,
        slow_rtt_s: float | None = None,
        rebalance_after_s: float = REBALANCE_AFTER_S,
    ) -> None:
        self.node = node
        self.store = store
        self.connect = connect
        self.http = http
        self.feed = ClusterFeed(store, own=node.boot)
        self.registry = NodeRegistry(store, node.node_name, LEASE_TTL_S)
        self.status = "up"  # in the registry: "up", or "draining" (server/drain.py)
        self._since_ms = 0  # in the registry: when `status` last changed (wall clock)
        self.published_clients = -1  # in the registry: the clients count it shows
        self._tasks: list[asyncio.Task[None]] = []
        self._watching = asyncio.Event()
        self.feed.on_created = self._watching.set
        self._relist_nodes = asyncio.Event()  # the watch saw a registry entry change
        self._listings = 0  # registry listings started
        self._listed = 0  # the newest of them taken
        self.fanout = WatchFanout(node, store, self.feed, self._relist_nodes.set)
        store.origin = node.boot
        store.prober = node.node_name
        # A message a key until the registry says every live node reads runs.
        store.message_runs = False
        # Room ownership and forwarding (server/ownership.py, nodelink.py).
        self.link = NodeLink(node, store.submit_messages) if link_bind is not None else None
        self._link_bind = link_bind
        self._link_advertise = link_advertise
        self._slow_rtt_s = slow_rtt_s
        self.nodes: list[NodeInfo] = []  # the registry's live nodes, as last listed
        # Clients sent back to the node they pick (server/homing.py); 0: never.
        self.homing = (
            Homing(
                node,
                lambda: (
                    (n.name, n.connect, n.status, n.started_ms, n.clients) for n in self.nodes
                ),
                rebalance_after_s,
                self._unfit,
            )
            if rebalance_after_s > 0
            else None
        )

    @property
    def relists(self) -> int:
        """How often the watch re-listed after its revision was compacted."""
        return self.fanout.relists

    def _unfit(self) -> set[str]:
        """Nodes the node link finds slow, unreachable or failing (homing.py)."""
        if self.link is None:
            return set()
        return self.link.ownership.unfit(time.monotonic())

    async def start(self, from_revision: int | None = None) -> None:
        """Register and start watching after `from_revision` (default: now)."""
        if from_revision is None:
            from_revision = await retrying("reading the revision", self.feed.current_revision)
        self.feed.revision = from_revision
        if self.link is not None and self._link_bind is not None:
            host = parse_connect(self.connect)[0].endpoint.removeprefix("tcp://").rpartition(":")[0]
            self.link.start(self._link_bind, host, self._link_advertise)
        await retrying("registering", lambda: self._register("up"))
        # Which etcd members serve (calls on one that does not give up at
        # once), and whether any answers at all (if none, clients move).
        self.probe = EtcdProbe(self.store, slow_rtt=self._slow_rtt_s or SLOW_RTT_S)
        self.store.probe = self.probe
        self.guard = StoreGuard(self.node, self.probe)
        if self.link is not None:
            self.guard.quick_elsewhere = self.link.ownership.quick_elsewhere
        self._tasks = [
            asyncio.create_task(self.fanout.run(), name="cluster-watch"),
            asyncio.create_task(self._keepalive_loop(), name="cluster-lease"),
            asyncio.create_task(self._nodes_loop(), name="cluster-nodes"),
            asyncio.create_task(self.probe.run(), name="etcd-probe"),
            asyncio.create_task(self.guard.run(), name="store-guard"),
        ]
        if self.homing is not None:
            self._tasks.append(asyncio.create_task(self.homing.run(), name="rebalance"))
        try:
            async with asyncio.timeout(10):
                await self._watching.wait()
        except TimeoutError:
            await self.stop()
            raise StoreUnavailable("etcd did not start the cluster watch within 10 s") from None
        try:
            await retrying("listing the nodes", self.refresh_peers)
        except StoreUnavailable:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.link is not None:
            await self.link.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(StoreUnavailable):
            await self.registry.revoke()

    # --- registry ---------------------------------------------------------------
    def _info(self, status: str, clients: int) -> bytes:
        info = NodeInfo(
            self.node.node_name,
            self.connect,
            status,
            self._since_ms,
            self.http,
            self.link.endpoint if self.link is not None else "",
            clients,
            True,
        )
        return msgspec.msgpack.encode(info)

    def _taken(self, value: bytes) -> str | None:
        return _held_by_another(value, self.node.node_name, _key_of(self.connect))

    async def _register(self, status: str) -> None:
        """Register (at start, and anew after the lease expired); refused
        with NodeNameTaken when another node holds this node's name."""
        self._since_ms = int(time.time() * 1000)
        clients = signed_in(self.node)
        await self.registry.register(self._info(status, clients), self._taken)
        self.status, self.published_clients = status, clients

    async def members(self) -> list[NodeInfo]:
        """The live nodes of the cluster (this one included), by name."""
        values = await self.registry.values()
        return sorted((_node_dec.decode(v) for v in values), key=lambda n: n.name)

    async def _keepalive_loop(self) -> None:
        while True:
            try:
                await self.registry.keep_alive(LEASE_TTL_S / 3, self._tick)
            except StoreUnavailable as exc:
                log.warning("cluster registry: %s; retrying", exc)
                await asyncio.sleep(RETRY_S)
            except NodeNameTaken as exc:
                # Another node took this node's name while its lease had
                # expired: stay out of the registry (its rooms are owned by
                # the registered nodes, this node forwards to them) and try
                # again after a lease's time.
                log.error("cluster registry: %s; this node stays unregistered", exc)
                await asyncio.sleep(LEASE_TTL_S)
            except Exception:
                # A bug or an error of the gRPC stream: never end the keep-alive
                # for good (the node would drop out of the registry unseen).
                log.exception("cluster registry: keep-alive failed; retrying")
                await asyncio.sleep(RETRY_S)

    async def _nodes_loop(self) -> None:
        """List the registry again when the watch saw an entry change, off
        the watch's own path (its messages are not held up by it), several
        changes at once taken as one. A listing that fails is left to the
        next change or keep-alive (every LEASE_TTL_S / 3), which lists too."""
        while True:
            await self._relist_nodes.wait()
            self._relist_nodes.clear()
            try:
                await self.refresh_peers()
            except StoreUnavailable as exc:
                log.info("cluster registry: listing the nodes: %s", exc)
            except Exception:
                log.exception("cluster registry: listing the nodes failed")
                await asyncio.sleep(RETRY_S)

    async def _tick(self, alive: bool) -> None:
        if not alive:
            # The lease expired (we were cut off too long): register anew.
            await self._register("draining" if self.node.draining else "up")
            return
        await self._publish_status()
        await self.refresh_peers()

    async def _publish_status(self) -> None:
        """Say in the registry whether this node is draining (the other
        nodes then leave it out of the live nodes their welcomes name) and
        how many clients it has (they spread clients by it: homing.py),
        when either changed: the count by at least 1 in 100 (every rewrite
        makes every node list the registry again; the spread's margins are
        5 % and 15 %)."""
        status = "draining" if self.node.draining else "up"
        clients = signed_in(self.node)
        moved = abs(clients - self.published_clients) >= max(1, self.published_clients // 100)
        if status != self.status or moved:
            if status != self.status:
                self._since_ms = int(time.time() * 1000)
            await self.registry.update(self._info(status, clients))
            self.status, self.published_clients = status, clients

    async def refresh_peers(self) -> None:
        """Hand clients the live nodes (ours first) in their welcome. Two
        listings may be in flight (a keep-alive's and a registry change's):
        one that started before the listing last taken is dropped."""
        self._listings += 1
        started = self._listings
        nodes = await self.members()
        if started < self._listed:
            return
        self._listed = started
        self.nodes = nodes
        self.store.message_runs = all(n.runs for n in nodes)
        others = [n for n in nodes if n.name != self.node.node_name]
        self.node.metrics.cluster_nodes.set(len(nodes))
        live = [n.connect for n in others if n.status == "up"]  # not those draining
        self.node.peers = [self.connect, *live][:MAX_PEERS]
        if self.link is not None:
            self.link.update(
                self.status == "up" and not self.node.draining,
                [(n.name, n.status, n.link, _key_of(n.connect)) for n in nodes],
            )
        # for the dashboard: the other nodes it should poll
        self.node.peer_nodes = [
            {"name": n.name, "url": n.http, "status": n.status, "started_ms": n.started_ms}
            for n in others
            if n.http
        ]


async def retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again while etcd is briefly unavailable (a leader change, a
    member lost) for up to START_RETRY_S: a node starting in the middle of
    one must not exit for it. Not when etcd refused this node's set-up
    (`StoreRefused`: credentials, TLS): that stays until the operator
    fixes it, and is said at once."""
    deadline = time.monotonic() + START_RETRY_S
    while True:
        try:
            return await call()
        except StoreRefused:
            raise
        except StoreUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("cluster start: %s: %s; retrying", what, exc)
            await asyncio.sleep(RETRY_S)
