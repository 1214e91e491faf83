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
keep-alive ticks, about 7 s). A few at a time (`SHARE_PER_TICK` of
the node's connections a tick, at least `MIN_PER_TICK`), each connection at
most once per `ASK_AGAIN_S` (one that did not go, or came back because
its first choice did not answer, is left alone meanwhile; the client itself
tries the node that moved it last for a minute).

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from curvechat.protocol.connect import ConnectStringError, parse_connect, spread_score
from curvechat.server.moving import MoveAsker
from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

REASON = "rebalance"
TICK_S = 1.0
ASK_AGAIN_S = 60.0
SHARE_PER_TICK = 0.02
MIN_PER_TICK = 10


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
    homes: dict[str, str] | None = None,
) -> list[bytes]:
    """The routing ids of `sessions` ((routing id, user, connected ms)),
    here for `settle_ms` at least, whose user would pick another node of
    `peers` that has been up for `settle_ms`. None while `me` is not among
    `peers` (this node's listing is stale, or it is not up). `homes`: a
    cache of `home` for these `peers`."""
    if not any(p.name == me for p in peers):
        return []
    settled = {p.name for p in peers if now_ms - p.up_since_ms >= settle_ms}
    settled.discard(me)
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
    ) -> None:
        self.node = node
        self.nodes = nodes
        self.settle_ms = int(settle_s * 1000)
        self.asked = 0  # connections asked to move, in all
        self._mover = MoveAsker(node, REASON, ASK_AGAIN_S, peers=True)
        self._homes: dict[str, str] = {}
        self._peers: tuple[Peer, ...] = ()

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
        peers = tuple(up_peers(self.nodes()))
        if peers != self._peers:
            self._peers, self._homes = peers, {}
        users = (
            (r, s.user, s.connected_ms)
            for r, s in node.sessions.items()
            if s.user and s.gone is None
        )
        found = misplaced(
            users,
            node.node_name,
            peers,
            now_ms=now_ms,
            settle_ms=self.settle_ms,
            homes=self._homes,
        )
        if not found:
            return 0
        limit = max(MIN_PER_TICK, int(len(node.sessions) * SHARE_PER_TICK))
        asked = self._mover.ask(only=found, limit=limit)
        if asked:
            self.asked += asked
            log.info("asked %d client(s) to move back to the node they pick", asked)
        return asked
