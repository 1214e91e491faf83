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
  goes there while that node stays at or under the home cap,
  max(⌊(1 + HOME) × mean⌋, ⌈mean⌉), and this node at or over the home
  floor, ⌊(1 − HOME) × mean⌋;
* spread (reason ``spread``): a node over max((1 + BAND) × mean, home cap)
  (heavy), or over the mean while another is under
  min((1 − BAND) × mean, home floor) (light), sends clients to the nodes
  with room under the home cap, the emptiest first, until it is down to
  the home cap (lower, and the nodes holding its own users would send them
  back), or to ⌊mean⌋ if what the nodes have over the cap cannot lift the
  light ones over the line (many nodes, or few clients); clients at home
  elsewhere first, then those that rank the target highest, among `POOL`
  times as many as it sends. Only once the
  listings have called for it for the settle time (the driver keeps that
  time): a node that has just come back first fills with its own clients,
  and a listing a keep-alive behind moves nobody.

Why it settles: on one listing, a move home never takes a node over the
home cap or under the home floor, so it never makes a node heavy or light,
and a spread leaves the giver at the home cap (or ⌊mean⌋) and the taker
at most at the home cap, inside both bounds. A node's room under the home
cap is split exactly among the nodes that may give (this node and the
targets over the home floor; the remainder goes to one of them after
another, look by look, by the look's number on the wall clock, which two
nodes may read one apart), and a node fills its part with homes first
(keeping room for its clients homed there that came too lately to be
asked yet: they may come from that very node, draining a moment ago), then
spreads. The listing lags (a node's count reaches it at its next
keep-alive), so the driver counts the clients it asked to go somewhere as
there already, and sends no more to that node, for a while; and it waits,
before a spread, until the listings have called for one for the settle
time among the same nodes. Simulated (tests/server/test_spread.py: every
node deciding at once on the same listing; tests/server/test_spread_driver.py:
the real drivers, listings a keep-alive behind, looks at phases of their
own): clients end within BAND of an even share (+1), none moved more than
twice, and then nobody moves.

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
import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from curvechat.protocol.connect import ConnectStringError, parse_connect, spread_score

HOME = 0.05
"""A client goes home while its home stays within this share above the mean."""
BAND = 0.15
"""A node this share above the mean is heavy, this share below it light."""
POOL = 8
"""A spread picks the clients that rank the target highest among this many
times as many as it sends (not among all: a look stays cheap)."""


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


@dataclass(frozen=True, slots=True)
class Plan:
    """A look's asks, and whether this listing calls for a spread from this
    node (made only when the caller said it may: the driver waits until it
    has for a while, so that a node just back fills with its own clients
    first and a stale listing does not move anyone)."""

    asks: list[Ask]
    uneven: bool = False


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


def _part(room: int, me: str, givers: Sequence[str], turn: int) -> int:
    """`me`'s part of `room` clients split exactly among `givers` (in one
    order every node computes alike), the remainder taken in turns."""
    if room <= 0 or me not in givers:
        return 0
    whole, left = divmod(room, len(givers))
    return whole + ((givers.index(me) - turn) % len(givers) < left)


def targets_of(
    me: str, peers: Sequence[Peer], *, now_ms: int, settle_ms: int, unfit: Collection[str] = ()
) -> dict[str, Peer]:
    """The nodes `me` may send clients to: up for `settle_ms`, not `unfit`,
    not itself; none while `me` is not among `peers` (its listing is stale,
    or it is not up)."""
    if not any(p.name == me for p in peers):
        return {}
    return {
        p.name: p
        for p in peers
        if p.name != me and now_ms - p.up_since_ms >= settle_ms and p.name not in unfit
    }


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
    incoming: Mapping[str, int] | None = None,
    limit: int | None = None,
    turn: int = 0,
    may_spread: bool = True,
) -> Plan:
    """Who of `sessions` ((routing id, user, connected ms); those it may
    ask) to ask to move where, at most `limit`. `mine`: this node's signed-in
    clients, less those it asked to leave that are still here. `incoming`:
    clients this node asked to go to a peer lately, which its published
    count may not show yet. None while `me` is not among `peers` (this
    node's listing is stale, or it is not up). `homes`: a cache of `home`
    for these `peers`. `turn`: which giver takes a room's remainder (the
    same on every node at once: the look's number). `may_spread`: make the
    spread this listing calls for (else only say it does)."""
    targets = targets_of(me, peers, now_ms=now_ms, settle_ms=settle_ms, unfit=unfit)
    if not targets:
        return Plan([])
    homes = {} if homes is None else homes
    limit = 1 << 62 if limit is None else limit

    def home_of(user: str) -> str:
        where = homes.get(user)
        if where is None:
            where = homes[user] = home(user, peers)
        return where

    everyone = list(sessions)
    if any(p.clients < 0 for p in targets.values()):  # an older node: homes only, unbounded
        found = (
            Ask(r, where, True)
            for r, u, since in everyone
            if now_ms - since >= settle_ms and (where := home_of(u)) in targets
        )
        return Plan(list(itertools.islice(found, limit)))
    incoming = incoming or {}
    load = {name: p.clients + incoming.get(name, 0) for name, p in targets.items()}
    load[me] = mine
    mean = sum(load.values()) / len(load)
    home_cap = max(math.floor((1 + HOME) * mean), math.ceil(mean))
    home_floor = math.floor((1 - HOME) * mean)
    # Each target's room, split exactly among the nodes that may give (this
    # node and the targets over the home floor, alike in every node's
    # listing): nodes deciding at once on one listing never fill it past the
    # home cap. A target this node sent clients to lately gets no more from
    # it until the listing shows them there.
    givers = sorted(n for n, count in load.items() if count > home_floor)
    room = {t: _part(home_cap - load[t], me, [n for n in givers if n != t], turn) for t in targets}
    for t in incoming:
        if t in room:
            room[t] = 0
    out: list[Ask] = []
    strays: list[tuple[bytes, str]] = []  # settled, at home elsewhere
    own: list[tuple[bytes, str]] = []  # settled, at home here
    kept = 0  # room kept for clients that just came here and will go home
    for routing_id, user, since in everyone:
        settled = now_ms - since >= settle_ms
        where = home_of(user)
        if len(out) + kept < min(mine - home_floor, limit) and room.get(where, 0) > 0:
            room[where] -= 1
            if settled:
                out.append(Ask(routing_id, where, True))
            else:  # not yet (it may come from a node that drains), but the room is its
                kept += 1
        elif settled:
            (own if where == me else strays).append((routing_id, user))

    heavy = mine > max((1 + BAND) * mean, home_cap)
    light_line = min((1 - BAND) * mean, home_floor)
    lights = [t for t in targets if load[t] < light_line]
    if not (heavy or (lights and mine > mean)):
        return Plan(out)
    if not may_spread:
        return Plan(out, uneven=True)
    # Down to the home cap (lower, and the nodes holding its own clients would
    # send them back); to ⌊mean⌋ only if what the nodes have over the cap
    # cannot lift the light ones over the line (many nodes, or few clients).
    need = sum(math.ceil(light_line) - load[t] for t in lights)
    spare = sum(max(0, count - home_cap) for count in load.values())
    level = home_cap if spare >= need else math.floor(mean)
    give = min(mine - level, limit) - len(out) - kept
    for t in sorted(targets, key=lambda name: load[name]):
        count = min(give, room[t])
        if count <= 0:
            continue
        # Clients at home elsewhere first, then those that rank t highest,
        # among a few times as many as it takes.
        key = targets[t].key
        pool = [(True, *x) for x in strays[: count * POOL]]
        pool += [(False, *x) for x in own[: count * POOL]]
        chosen = heapq.nlargest(count, pool, key=lambda x: (x[0], spread_score(x[2], key)))
        out += [Ask(routing_id, t, False) for _, routing_id, _ in chosen]
        taken = {routing_id for _, routing_id, _ in chosen}
        strays = [x for x in strays if x[0] not in taken]
        own = [x for x in own if x[0] not in taken]
        give -= len(chosen)
    return Plan(out, uneven=True)
