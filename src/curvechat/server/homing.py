"""Handing clients back to the node they would pick (rebalance).

What it is for: a client picks its node by rendezvous hashing over the live
nodes (protocol.md, "Which node"), but it stays where a failover or a move
put it. After a rolling restart the clients of each restarted node sit on
the others, and all of them can end up on the node restarted last but one.
So a node asks a client to move (`push_move`, reason ``rebalance``, naming
the live nodes) when the client's first choice among the nodes up in the
registry is another node that has been up for `settle_s` (one that has just
started may not stay), and the client has been here that long too (one that
has just come may have come from a node that drains or fails, before the
registry says so: a node's status reaches the others' listings within two
keep-alive ticks, about 7 s; so `settle_s` is at least `MIN_SETTLE_S`).
Not to a node this node's link finds slow to reach etcd, unreachable or
failing (the registry says none of that). A few at a time
(`SHARE_PER_TICK` of the node's connections a tick, at least
`MIN_PER_TICK`), and each user at most once per `ASK_AGAIN_S` from this
node: a client that could not reach its first choice (and came here, or
back) is left alone meanwhile, so one whose first choice is up but out of
its reach moves at most once per node in that time.

The decision (`misplaced`) is sans-IO: the live nodes and the connections'
users in, the routing ids to ask out. `Homing` is the thin driver the
cluster runs. It must never ask while this node is draining, cut off from
etcd or slow to reach it (those ask everyone to move, for their own
reasons), nor send a client to a node that is not up, that only just came
up, or that this node's own listing leaves out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from curvechat.protocol.connect import ConnectStringError, parse_connect, spread_score
from curvechat.server.moving import MoveAsker
from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

REASON = "rebalance"
TICK_S = 5.0
"""A look walks every connection: on the event loop, so not every second."""
ASK_AGAIN_S = 300.0
MIN_SETTLE_S = 10.0
SHARE_PER_TICK = 0.1
MIN_PER_TICK = 50


@dataclass(frozen=True, slots=True)
class Peer:
    """A node up in the registry: its name, its CURVE public key, and since
    when it says it is up (wall clock, ms)."""

    name: str
    key: bytes
    up_since_ms: int


def home(user: str, peers: Sequence[Peer]) -> str:
    """The node `user`'s clients pick among `peers`: the highest score."""
    return max(peers, key=lambda p: spread_score(user, p.key)).name


def misplaced(
    sessions: Iterable[tuple[bytes, str, int]],
    me: str,
    peers: Sequence[Peer],
    *,
    now_ms: int,
    settle_ms: int,
    unfit: Collection[str] = (),
    homes: dict[str, str] | None = None,
) -> list[bytes]:
    """The routing ids of `sessions` ((routing id, user, connected ms)),
    here for `settle_ms` at least, whose user would pick another node of
    `peers` that has been up for `settle_ms` and is not `unfit`. None while
    `me` is not among `peers` (this node's listing is stale, or it is not
    up). `homes`: a cache of `home` for these `peers`."""
    if not any(p.name == me for p in peers):
        return []
    settled = {p.name for p in peers if now_ms - p.up_since_ms >= settle_ms}
    settled.discard(me)
    settled.difference_update(unfit)
    if not settled:
        return []
    homes = {} if homes is None else homes
    out = []
    for routing_id, user, connected_ms in sessions:
        if now_ms - connected_ms < settle_ms:
            continue
        where = homes.get(user)
        if where is None:
            where = homes[user] = home(user, peers)
        if where in settled:
            out.append(routing_id)
    return out


def up_peers(nodes: Iterable[tuple[str, str, str, int]]) -> list[Peer]:
    """Peers from registry entries (name, connect string, status, since ms):
    those up, with a key that parses."""
    out = []
    for name, connect, status, since_ms in nodes:
        if status != "up":
            continue
        try:
            key = parse_connect(connect)[0].key
        except (ConnectStringError, IndexError):
            continue
        out.append(Peer(name, key, since_ms))
    return out


class Homing:
    """Runs `misplaced` every TICK_S over `nodes()` (the registry's entries
    as the cluster last listed them) and asks those it finds to move."""

    def __init__(
        self,
        node: ChatNode,
        nodes: Callable[[], Iterable[tuple[str, str, str, int]]],
        settle_s: float,
        unfit: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        if settle_s < MIN_SETTLE_S:
            raise ValueError(f"the settle time is at least {MIN_SETTLE_S:g} s")
        self.node = node
        self.nodes = nodes
        self.unfit = unfit
        self.settle_ms = int(settle_s * 1000)
        self.asked = 0  # connections asked to move, in all
        # Each connection is asked once: the users' own memory below says when again.
        self._mover = MoveAsker(node, REASON, float("inf"), peers=True)
        self._homes: dict[str, str] = {}
        self._peers: tuple[Peer, ...] = ()
        self._asked_users: dict[str, float] = {}  # user -> when asked (monotonic), oldest first

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick(int(time.time() * 1000))
            except Exception:  # a bug: say so, and keep the cluster's other work going
                log.exception("rebalancing clients failed")

    def tick(self, now_ms: int) -> int:
        """One look: returns how many connections were asked to move."""
        node = self.node
        if node.draining or node.store_cut_off or node.store_slow:
            return 0
        now = time.monotonic()
        asked_users = self._asked_users
        while asked_users:  # forget who was asked longer ago than ASK_AGAIN_S
            user, when = next(iter(asked_users.items()))
            if now - when < ASK_AGAIN_S:
                break
            del asked_users[user]
        peers = tuple(up_peers(self.nodes()))
        if peers != self._peers or len(self._homes) > 2 * len(node.sessions) + 1000:
            self._peers, self._homes = peers, {}
        sessions = node.sessions
        users = (
            (r, s.user, s.connected_ms)
            for r, s in sessions.items()
            if s.user and s.gone is None and s.user not in asked_users
        )
        found = misplaced(
            users,
            node.node_name,
            peers,
            now_ms=now_ms,
            settle_ms=self.settle_ms,
            unfit=self.unfit(),
            homes=self._homes,
        )
        if not found:
            return 0
        limit = max(MIN_PER_TICK, int(len(sessions) * SHARE_PER_TICK))
        asked = self._mover.ask(only=found[:limit])
        for routing_id in found[:limit]:
            sess = sessions.get(routing_id)
            if sess is not None and sess.user:
                asked_users.pop(sess.user, None)
                asked_users[sess.user] = now
        if asked:
            self.asked += asked
            log.info("asked %d client(s) to move back to the node they pick", asked)
        return asked
