"""Room ownership in cluster mode: which node commits a room's messages.

Every room has one owner among the live nodes of the registry: the node
with the highest rendezvous score ``blake2b(node name, room)``. Rendezvous
hashing needs no shared state (each node computes the same owner from the
same registry), moves only the rooms of a node that comes or goes (about
1/N of them), and spreads rooms evenly without virtual nodes. A lease per
room would need one more etcd write per room per hand-over and a renewal
loop; the head compare-and-swap already fences a stale owner, so the
lease would buy nothing but slower hand-overs.

A node that is not a room's owner forwards the room's sends to the owner
over the node link (server/nodelink.py); the owner commits them in its own
group commits, so a room's head is written by one node and no commit
retries on another node's compare-and-swap. Ownership is an optimisation,
never a rule of correctness: every commit still compares the room's head,
so two nodes that both believe they own a room (while the registry change
reaches them) only retry, and nothing is stored twice or out of order.

The rules (`Ownership.route`), in order:

===========================================  ===========================
situation                                    decision
===========================================  ===========================
the send came over the node link             commit here (one hop only)
no live node named, or this node not one     commit here
the owner can take it, and it is this node   commit here
the owner can take it                        forward to the owner
its stand-in is this node                    commit here, instead of it
otherwise                                    forward to the stand-in
===========================================  ===========================

"Live" is the registry's nodes with status ``up`` and a link endpoint: a
draining node hands its rooms over as soon as it says it drains.
A node *can take* a room's sends when it is usable from here and not slow.
*Usable*: this node always; another one unless its link is unreachable
(what the heartbeat says, server/forwarder.py: it answered no ping for
SILENT_S, or answered that it reaches no etcd member; this lasts until it
answers a ping again, with no DOWN_S wait: a heartbeat, unlike a forward,
costs nothing when it goes unanswered) or a forward to it failed in the
last DOWN_S. *Slow*: its round trips to etcd take over `--etcd-slow-ms`
(server/storeguard.py; another node says so in its ping answers), or it
reaches no etcd member. The *stand-in* is the rendezvous owner among the
usable nodes that are not slow (among all usable nodes when every one is
slow: then nobody is better placed than the owner; a node that reaches no
etcd member is never its own stand-in while another node is usable). Every node that sees
the same owner fail computes the same stand-in, so the owner's rooms are
still committed by one node, not by every node its senders are on, and
their head compare-and-swaps do not race; rendezvous hashing moves only
the rooms of the owner that cannot take them.

What this module must never do: any I/O, any clock reading of its own
(callers pass `now`), or refuse a send: every path ends in a commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

DOWN_S = 5.0  # a failed link is not used for this long


def owner_of(room: str, nodes: Iterable[str]) -> str | None:
    """The rendezvous owner of `room` among `nodes` (None if there is none)."""
    best: tuple[bytes, str] | None = None
    key = room.encode()
    for name in nodes:
        score = hashlib.blake2b(key, key=name.encode()[:64], digest_size=8).digest()
        if best is None or (score, name) > best:
            best = (score, name)
    return None if best is None else best[1]


class Route(Enum):
    LOCAL = "local"
    FORWARD = "forward"
    INSTEAD = "instead"  # here, in place of an owner that cannot take it now


@dataclass(slots=True)
class Ownership:
    """This node's view of who owns which room (see the module docstring)."""

    me: str
    live: tuple[str, ...] = ()
    down_until: dict[str, float] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    slow: set[str] = field(default_factory=set)
    cut_off_here: bool = False  # this node reaches no etcd member: it commits nothing
    _owners: dict[str, str | None] = field(default_factory=dict)

    def set_live(self, names: Iterable[str]) -> bool:
        """The live nodes from the registry; returns True if they changed."""
        live = tuple(sorted(set(names)))
        if live == self.live:
            return False
        self.live = live
        self._owners.clear()
        for name in list(self.down_until):
            if name not in live:
                del self.down_until[name]
        self.unreachable &= set(live)
        self.slow = {n for n in self.slow if n in live or n == self.me}
        return True

    def owner(self, room: str) -> str | None:
        try:
            return self._owners[room]
        except KeyError:
            if len(self._owners) > 100_000:
                self._owners.clear()
            found = self._owners[room] = owner_of(room, self.live)
            return found

    def route(self, room: str, now: float, *, forwarded: bool = False) -> tuple[Route, str | None]:
        """Where a send into `room` is committed: (LOCAL, None), (FORWARD,
        owner or stand-in), or (INSTEAD, owner) when this node stands in."""
        if forwarded or self.me not in self.live:
            return Route.LOCAL, None
        owner = self.owner(room)
        if owner is None:
            return Route.LOCAL, None
        if owner not in self.slow and self._usable(owner, now):
            return (Route.LOCAL, None) if owner == self.me else (Route.FORWARD, owner)
        stand_in = self.stand_in(room, now)
        if stand_in != self.me:
            return Route.FORWARD, stand_in
        return (Route.LOCAL, None) if owner == self.me else (Route.INSTEAD, owner)

    def stand_in(self, room: str, now: float) -> str:
        """The node that takes `room`'s sends when its owner cannot."""
        usable = [n for n in self.live if self._usable(n, now)]
        if self.cut_off_here and len(usable) > 1:
            usable.remove(self.me)  # it could not commit: any other node can
        healthy = [n for n in usable if n not in self.slow]
        return owner_of(room, healthy or usable) or self.me

    def quick_elsewhere(self) -> bool:
        """Whether another live node answers its pings and is not slow."""
        return any(
            n != self.me and n not in self.slow and n not in self.unreachable for n in self.live
        )

    def unfit(self, now: float) -> set[str]:
        """Other nodes not to send clients to now: slow to reach etcd, or
        their link unreachable or failing (homing.py)."""
        others = (n for n in self.live if n != self.me)
        return {n for n in others if n in self.slow or not self._usable(n, now)}

    def _usable(self, name: str, now: float) -> bool:
        if name == self.me:
            return True
        return name not in self.unreachable and self.down_until.get(name, 0.0) <= now

    def link_failed(self, name: str, now: float) -> None:
        self.down_until[name] = now + DOWN_S

    def link_worked(self, name: str) -> None:
        self.down_until.pop(name, None)

    def set_slow(self, name: str, slow: bool) -> bool:
        """Whether `name` (this node too) is slow now; returns True if it changed."""
        return _mark(self.slow, name, slow)

    def set_reachable(self, name: str, reachable: bool) -> bool:
        """What the link's heartbeat says of `name`; returns True if it changed."""
        return _mark(self.unreachable, name, not reachable)


def _mark(names: set[str], name: str, member: bool) -> bool:
    """Put `name` in `names` or take it out; returns True if that changed it."""
    if member == (name in names):
        return False
    if member:
        names.add(name)
    else:
        names.discard(name)
    return True
