"""The nodes a client tries, in order (sans-IO): those it was given, then
those a welcome named in cluster mode (Freelance pattern); and what the
failed attempts on them say, taken together.

Which node first (`attempt_order`): clients spread over a cluster by
rendezvous hashing of their user name with each node's key, so every client
of one user picks the same node, the users divide evenly over the nodes,
and when a node leaves only its own clients move, evenly over the rest.
The ranking, most preferred first:

1. nodes not draining (a node that told us to move, or refused our hello
   as draining, in the last DRAIN_AVOID_S) before draining ones;
2. live nodes (named by the latest welcome, or given in the connect
   string and named by the last run's) before the others (not named:
   probably down); while no welcome named any (a single node, or none yet
   in this run), the node that answered last, then the given ones, then
   those an earlier welcome named: a node named by a welcome is preferred
   only while a welcome of this run names it, so a server that named
   another once (of its choosing) cannot keep its clients there;
3. within each group, the rendezvous order: highest score first.

Within one round over the nodes the next one is tried at once; the
back-off comes between rounds. This module never opens a socket or reads a
clock: callers pass `now` (monotonic seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from curvechat.protocol.connect import (
    ConnectStringError,
    ServerAddress,
    parse_connect,
    spread_score,
)
from curvechat.protocol.limits import MAX_PEERS

log = logging.getLogger("curvechat.client")


REFUSED = "refused"
"""Nothing listens there: the TCP connection was refused."""
KEY_MISMATCH = "key_mismatch"
"""The node closed the connection during the CURVE handshake."""
AUTH = "auth"
"""The node's authentication (ZAP) turned this client's key away."""
TIMEOUT = "timeout"
"""No welcome within the connect timeout (a host that does not answer)."""
LOST = "lost"
"""Anything else that ended an attempt."""


DRAINING = "draining"
"""The node is draining: it told us to move, or refused our hello."""

DRAIN_AVOID_S = 60.0
"""How long a node that said it is draining is tried last."""


MOVE_REASONS = {
    "draining": "is draining",
    "store_unreachable": "cannot reach its store",
    "store_slow": "reaches its store slowly",
    "rebalance": "hands its clients back to their own nodes",
    "spread": "has more than its share of clients",
}


DIRECTED = frozenset({"rebalance", "spread"})
"""Moves that name where to go (`peers`): the node that asks is not
draining, so it is not tried last afterwards."""


def moving_detail(node: str, reason: str) -> str:
    """Why the client moves, for its status line (`reason` of a `push_move`)."""
    why = MOVE_REASONS.get(reason, f"asks its clients to move ({reason})")
    return f"node {node} {why}: moving to another node"


def score(key: str, node: ServerAddress) -> int:
    """The rendezvous score of `node` for the user `key`: the node's CURVE
    key (not its address, which may be spelled several ways) hashed with
    the user name. The same everywhere: every client computes it alike."""
    return spread_score(key, node.key)


def attempt_order(
    key: str,
    known: list[ServerAddress],
    live: list[ServerAddress] | None,
    draining: Collection[ServerAddress] = (),
    last: ServerAddress | None = None,
    given: Collection[ServerAddress] | None = None,
) -> list[ServerAddress]:
    """`known` in the order to try them (module docstring): not draining
    first, then live (when `live` is None: `last`, then those `given`, or
    all), then by rendezvous score for `key`. With an empty `key` the given
    order is kept within groups."""
    live_set = set(live if live is not None else known if given is None else given)
    first = last if live is None else None

    def rank(item: tuple[int, ServerAddress]) -> tuple[bool, bool, bool, int, int]:
        index, node = item
        not_first = first is not None and node != first
        hashed = -score(key, node) if key else 0
        return (node in draining, node not in live_set, not_first, hashed, index)

    return [node for _, node in sorted(enumerate(known), key=rank)]


def prefer(given: list[ServerAddress], first: ServerAddress | None) -> list[ServerAddress]:
    """`given` with `first` (the node that answered last) in it, first."""
    if first is None:
        return list(given)
    return [first, *(a for a in given if a != first)]


def next_attempt_now(attempt: int, nodes: int) -> bool:
    """After `attempt` failed attempts in a row over `nodes` nodes: try the
    next node at once (still in the first rounds over the list) or wait the
    back-off (a whole round failed)."""
    return nodes > 1 and attempt % nodes != 0


def verdict(endpoints: list[str], failures: dict[str, str]) -> str | None:
    """What the latest failed attempts on every node say together: None
    while some node has not failed yet (it may still answer);
    KEY_MISMATCH if any node failed its handshake (the connect string is
    wrong: waiting cannot help), else AUTH if any node turned our key away;
    REFUSED if nothing listens on any of them (the service is down);
    DRAINING if the others are draining (a restart is on); else TIMEOUT."""
    kinds = [failures.get(e) for e in endpoints]
    if not kinds or None in kinds:
        return None
    for decisive in (KEY_MISMATCH, AUTH):
        if decisive in kinds:
            return decisive
    if all(k == REFUSED for k in kinds):
        return REFUSED
    if all(k in (REFUSED, DRAINING) for k in kinds):
        return DRAINING
    return TIMEOUT


class ServerList:
    def __init__(self, given: list[ServerAddress], *, key: str = "") -> None:
        if not given:
            raise ValueError("no server addresses")
        self.given = list(given)
        self.key = key
        """What the client spreads by: its user name ("" keeps the given order)."""
        self.learned: list[ServerAddress] = []
        self.live: list[ServerAddress] | None = None
        """The nodes the latest welcome named (None: no welcome named any)."""
        self._draining: dict[ServerAddress, float] = {}  # node -> avoided until
        self.last: ServerAddress | None = None
        """The node that answered last (remembered between runs): first while
        no welcome names the live nodes."""

    @property
    def all(self) -> list[ServerAddress]:
        return self.given + self.learned

    def learn(self, peers: list[str], *, moving: bool = False) -> None:
        """Take the live nodes a welcome names: they join the list (the ones
        given stay, first and in order) and rank first; a peer that does
        not parse is ignored. No peers (a single node) changes nothing.
        `moving`: a node that asks us to move named them; they are no longer
        tried last for having said they drain (the registry says they are up)."""
        found: list[ServerAddress] = []
        for text in peers:
            try:
                found.extend(a for a in parse_connect(text) if a not in found)
            except ConnectStringError as exc:
                log.warning("ignoring a peer the server named: %s", exc)
        if not found:
            return
        self.live = found[:MAX_PEERS]
        if moving:
            for address in self.live:
                self._draining.pop(address, None)
        fresh = [a for a in self.live if a not in self.given]
        # The nodes learned before stay, after these: a welcome given while
        # the node's view of the registry is stale (after a quorum loss, a
        # node may name only itself) must not leave the client knowing one
        # node, to retry alone when it goes silent.
        fresh += [a for a in self.learned if a not in fresh]
        fresh = fresh[:MAX_PEERS]
        if fresh != self.learned:
            self.learned = fresh
            log.info("cluster nodes known: %s", ", ".join(a.endpoint for a in self.all))

    def mark_draining(self, node: ServerAddress, now: float) -> None:
        """`node` said it is draining: try it last for DRAIN_AVOID_S."""
        self._draining[node] = now + DRAIN_AVOID_S

    def order(self, now: float) -> list[ServerAddress]:
        draining = {a for a, until in self._draining.items() if until > now}
        return attempt_order(self.key, self.all, self.live, draining, self.last, self.given)

    def recall(self, live: list[str], last: ServerAddress | None) -> None:
        """What the last run learned for this connect string: the live nodes
        its welcome named join the list, but only the given ones among them
        rank as live until a welcome of this run names live nodes; `last`
        counts only if it was given."""
        self.learn(live)
        if self.live is not None:
            self.live = [a for a in self.live if a in self.given] or None
        self.last = last if last in self.given else None

    def first(self, now: float) -> ServerAddress:
        return self.order(now)[0]

    def instead_of(self, node: ServerAddress, now: float) -> ServerAddress:
        """The node to go to when the connection to `node` ended: the most
        preferred other one (`node` itself if it is the only one)."""
        return next((a for a in self.order(now) if a != node), node)

    def after(self, node: ServerAddress, now: float) -> ServerAddress:
        """The node to try after `node` (the next in the order, round and round)."""
        order = self.order(now)
        if node not in order:
            return order[0]
        return order[(order.index(node) + 1) % len(order)]
