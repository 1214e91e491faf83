"""Where a node's clients should be (sans-IO): on the node they pick, within
a bound on every node's share of the clients.

What it is for: a client picks its node by rendezvous hashing of its user
name over the live nodes (protocol.md, "Which node"). That spreads users
evenly only on average: the count on a node varies by about √N, so 100
clients over 3 nodes land within 20 % of a third for only about 70 % of
random sets of node keys. And a client stays where a failover or a drain
put it. So each node looks, every few seconds (the driver is homing.py),
at its own clients and at the loads the other nodes publish in the
registry, and asks some of its clients to move:

* home (reason ``rebalance``): a client whose first choice is another node
  goes there while that node stays at or under (1 + HOME) × the mean load
  and this node at or over (1 − HOME) × the mean;
* spread (reason ``spread``): a node over (1 + BAND) × the mean, or over
  the mean while another is under (1 − BAND) × it, sends clients to the
  nodes under the mean until it is down to the mean; to each such node
  first the clients that rank it highest (those for whom it is the next
  choice). Only in a look that sends nobody home: those moves change the
  loads, so the next look decides on a fresh listing.

HOME < BAND keeps the two from undoing each other: a move home never makes
a node heavy or light in the spread's sense, so a node brought down to the
mean by a spread takes back only a few of its clients. A node that gives
takes only its share of another node's room (the room divided by the
nodes over the mean), so nodes deciding at once from the same listing do
not all fill the same node.

The mean is over this node and the nodes it may send clients to: up in the
registry for `settle_ms` (a node that has just started may not stay), and
not found unfit by this node's link. A client is asked only once it has
been here `settle_ms` (it may have come from a node that drains or fails
before the registry says so). A node whose entry does not say its load (an
older version) turns the bounds off: clients are sent home only, as before.

What it must never do: read a clock or a socket (`now_ms` comes in), send a
client to this node itself, to a node not up long enough or unfit, or act
while this node is not in its own listing.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from curvechat.protocol.connect import ConnectStringError, parse_connect, spread_score

HOME = 0.05
"""A client goes home while its home stays within this share above the mean."""
BAND = 0.15
"""A node this share above the mean is heavy, this share below it light."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A node up in the registry: its name, its CURVE public key, since when
    it says it is up (wall clock, ms), its connect string and how many
    clients it says it has (-1: its entry does not say)."""

    name: str
    key: bytes
    up_since_ms: int
    connect: str = ""
    clients: int = -1


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the connection `routing_id` to move to the node `to`: its own
    first choice (`home`), or a node with room (a spread)."""

    routing_id: bytes
    to: str
    home: bool


def home(user: str, peers: Sequence[Peer]) -> str:
    """The node `user`'s clients pick among `peers`: the highest score."""
    return max(peers, key=lambda p: spread_score(user, p.key)).name


def up_peers(nodes: Iterable[tuple[str, str, str, int, int]]) -> list[Peer]:
    """Peers from registry entries (name, connect string, status, since ms,
    clients): those up, with a key that parses."""
    out = []
    for name, connect, status, since_ms, clients in nodes:
        if status != "up":
            continue
        try:
            key = parse_connect(connect)[0].key
        except (ConnectStringError, IndexError):
            continue
        out.append(Peer(name, key, since_ms, connect, clients))
    return out


def _share(room: float, givers: int) -> int:
    """One giver's share of `room` clients (rounded up; none if no room)."""
    return math.ceil(room / givers) if room >= 1 else 0


def plan(
    sessions: Iterable[tuple[bytes, str, int]],
    me: str,
    peers: Sequence[Peer],
    *,
    mine: int,
    now_ms: int,
    settle_ms: int,
    unfit: Collection[str] = (),
    homes: dict[str, str] | None = None,
) -> list[Ask]:
    """Who of `sessions` ((routing id, user, connected ms); those it may
    ask) to ask to move where, homes first. `mine`: this node's clients,
    all of them. None while `me` is not among `peers` (this node's listing
    is stale, or it is not up). `homes`: a cache of `home` for these
    `peers`."""
    if not any(p.name == me for p in peers):
        return []
    targets = {
        p.name: p
        for p in peers
        if p.name != me and now_ms - p.up_since_ms >= settle_ms and p.name not in unfit
    }
    if not targets:
        return []
    homes = {} if homes is None else homes

    def home_of(user: str) -> str:
        where = homes.get(user)
        if where is None:
            where = homes[user] = home(user, peers)
        return where

    settled = [(r, u) for r, u, since in sessions if now_ms - since >= settle_ms]
    if any(p.clients < 0 for p in targets.values()):  # an older node: homes only, unbounded
        return [Ask(r, where, True) for r, u in settled if (where := home_of(u)) in targets]
    load = {name: p.clients for name, p in targets.items()}
    load[me] = mine
    mean = sum(load.values()) / len(load)
    givers = sum(1 for n in load.values() if n > mean) or 1

    out: list[Ask] = []
    room = {t: _share(math.floor((1 + HOME) * mean) - load[t], givers) for t in targets}
    may_give = math.floor(mine - (1 - HOME) * mean)
    rest: list[tuple[bytes, str]] = []
    for routing_id, user in settled:
        where = home_of(user)
        if may_give > 0 and room.get(where, 0) > 0:
            out.append(Ask(routing_id, where, True))
            room[where] -= 1
            may_give -= 1
        else:
            rest.append((routing_id, user))

    if out:  # the loads change with these: spread on the next listing, if still due
        return out
    light = any(load[t] < (1 - BAND) * mean for t in targets)
    if not (mine > (1 + BAND) * mean or (light and mine > mean)):
        return out
    give = math.ceil(mine - mean)
    for t in sorted(targets, key=lambda name: load[name]):
        if give <= 0 or not rest:
            break
        count = min(give, _share(math.floor(mean) - load[t], givers))
        if count <= 0:
            continue
        key = targets[t].key
        chosen = heapq.nlargest(count, rest, key=lambda item: spread_score(item[1], key))
        out += [Ask(routing_id, t, False) for routing_id, _ in chosen]
        taken = {routing_id for routing_id, _ in chosen}
        rest = [item for item in rest if item[0] not in taken]
        give -= len(chosen)
    return out
