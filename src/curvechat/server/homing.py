"""Sending clients back to the node they pick, and spreading them when
one node has too many (the driver of `curvechat.server.spread`).

What it is for: a client stays where a failover or a move put it, and
rendezvous hashing alone spreads users only on average. Every `TICK_S` the
node takes the nodes up in the registry (with the clients each says it
has) and its own connections, asks `spread.plan` who should be elsewhere,
and asks them to move (`push_move`): reason ``rebalance`` naming the live
nodes (the client goes to its first choice), or ``spread`` naming only the
node with room (the client goes there).

A node's status reaches the others' listings within two keep-alive ticks,
about 7 s, so the settle time (how long a node, and a connection, must
have been up before it is moved to or asked) is at least `MIN_SETTLE_S`.
Not to a node this node's link finds slow to reach etcd, unreachable or
failing (the registry says none of that). A few at a time
(`SHARE_PER_TICK` of the node's connections a tick, at least
`MIN_PER_TICK`), and each user at most once per `ASK_AGAIN_S` from this
node: a client that could not reach where it was sent (and came here, or
back) is left alone meanwhile.

It must never ask while this node is draining, cut off from etcd or slow to
reach it (those ask everyone to move, for their own reasons); the rules of
who goes where are `spread.py`'s, not this driver's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable

from curvechat.server.moving import MoveAsker
from curvechat.server.node import ChatNode
from curvechat.server.spread import plan, targets_of, up_peers

log = logging.getLogger("curvechat.server")

REASON = "rebalance"
SPREAD_REASON = "spread"
TICK_S = 5.0
"""A look walks every connection: on the event loop, so not every second."""
ASK_AGAIN_S = 300.0
IN_TRANSIT_S = 15.0
"""How long a client asked to move counts as on its way (gone from here, at
the node it was sent to): its new node's count reaches the registry at its
next keep-alive, about 3 s after it arrives, or later (server/cluster.py)."""
MIN_SETTLE_S = 10.0
SHARE_PER_TICK = 0.1
MIN_PER_TICK = 50


def signed_in(node: ChatNode) -> int:
    """The node's connections that said hello (a connection that has not is
    no one's client, and must not weigh on where clients go)."""
    return sum(1 for s in node.sessions.values() if s.user and s.gone is None)


class Homing:
    """Runs `spread.plan` every TICK_S over `nodes()` (the registry's entries
    as the cluster last listed them) and asks those it finds to move."""

    def __init__(
        self,
        node: ChatNode,
        nodes: Callable[[], Iterable[tuple[str, str, str, int, int]]],
        settle_s: float,
        unfit: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        if settle_s < MIN_SETTLE_S:
            raise ValueError(f"the settle time is at least {MIN_SETTLE_S:g} s")
        self.node = node
        self.nodes = nodes
        self.unfit = unfit
        self.settle_ms = int(settle_s * 1000)
        self.asked = 0  # connections asked to move home, in all
        self.spread = 0  # connections asked to move to a node with room, in all
        # Each connection is asked once: the users' own memory below says when again.
        self._home_mover = MoveAsker(node, REASON, float("inf"), peers=True)
        self._spread_mover = MoveAsker(node, SPREAD_REASON, float("inf"))
        self._homes: dict[str, str] = {}
        self._ring: tuple[tuple[str, bytes], ...] = ()  # the peers `_homes` was made for
        self._asked_users: dict[str, float] = {}  # user -> when asked (monotonic), oldest first
        # routing id -> (when asked (monotonic), to which node), oldest first
        self._in_transit: dict[bytes, tuple[float, str]] = {}
        self._uneven_since: float | None = None  # since when the listings call for a spread
        self._uneven_among: frozenset[str] = frozenset()  # ... among these nodes

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick(int(time.time() * 1000))
            except Exception:  # a bug: say so, and keep the cluster's other work going
                log.exception("rebalancing clients failed")

    def tick(self, now_ms: int, now: float | None = None) -> int:
        """One look at wall-clock `now_ms` (and monotonic `now`, by default
        the clock's): returns how many connections were asked to move."""
        node = self.node
        if node.draining or node.store_cut_off or node.store_slow:
            self._uneven_since = None
            return 0
        now = time.monotonic() if now is None else now
        asked_users = self._asked_users
        while asked_users:  # forget who was asked longer ago than ASK_AGAIN_S
            user, when = next(iter(asked_users.items()))
            if now - when < ASK_AGAIN_S:
                break
            del asked_users[user]
        in_transit = self._in_transit
        while in_transit:
            routing_id, (when, _) = next(iter(in_transit.items()))
            if now - when < IN_TRANSIT_S:
                break
            del in_transit[routing_id]
        incoming: dict[str, int] = {}
        for _, to in in_transit.values():
            incoming[to] = incoming.get(to, 0) + 1
        peers = up_peers(self.nodes())
        ring = tuple((p.name, p.key) for p in peers)
        sessions = node.sessions
        if ring != self._ring or len(self._homes) > 2 * len(sessions) + 1000:
            self._ring, self._homes = ring, {}
        mine = 0
        users = []
        for routing_id, conn in sessions.items():
            if not conn.user or conn.gone is not None or routing_id in in_transit:
                continue
            mine += 1
            if conn.user not in asked_users:
                users.append((routing_id, conn.user, conn.connected_ms))
        unfit = self.unfit()
        among = frozenset(
            targets_of(node.node_name, peers, now_ms=now_ms, settle_ms=self.settle_ms, unfit=unfit)
        )
        if among != self._uneven_among:
            # Another set of nodes to send clients to (one came back, or
            # left): the settle time runs again before a spread, homes first.
            self._uneven_since, self._uneven_among = None, among
        uneven_for = 0.0 if self._uneven_since is None else now - self._uneven_since
        result = plan(
            users,
            node.node_name,
            peers,
            mine=mine,
            now_ms=now_ms,
            settle_ms=self.settle_ms,
            unfit=unfit,
            homes=self._homes,
            incoming=incoming,
            limit=max(MIN_PER_TICK, int(mine * SHARE_PER_TICK)),
            turn=int(now_ms // (TICK_S * 1000)),
            may_spread=uneven_for * 1000 >= self.settle_ms,
        )
        if not result.uneven:
            self._uneven_since = None
        elif self._uneven_since is None:
            self._uneven_since = now
        found = result.asks
        if not found:
            return 0
        homes = self._home_mover.ask(only=[a.routing_id for a in found if a.home])
        connect = {p.name: p.connect for p in peers}
        spread: list[bytes] = []
        for to in {a.to for a in found if not a.home}:
            only = [a.routing_id for a in found if not a.home and a.to == to]
            spread += self._spread_mover.ask(only=only, to=[connect[to]])
        # Only those asked now are on their way: a connection a mover had
        # asked before (each mover asks a connection once: it did not move)
        # stays, and is counted here; its user waits ASK_AGAIN_S like the others.
        sent = {*homes, *spread}
        for ask in found:
            sess = sessions.get(ask.routing_id)
            if sess is not None and sess.user:
                asked_users.pop(sess.user, None)
                asked_users[sess.user] = now
                if ask.routing_id in sent:
                    in_transit[ask.routing_id] = (now, ask.to)
        self.asked += len(homes)
        self.spread += len(spread)
        if homes:
            log.info("asked %d client(s) to move back to the node they pick", len(homes))
        if spread:
            log.info("asked %d client(s) to move to nodes with fewer clients", len(spread))
        return len(sent)
