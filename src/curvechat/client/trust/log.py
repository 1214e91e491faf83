"""One room's verified membership log and the facts the trust rules read off it.

A `RoomLog` only ever grows by ops that the membership rules accepted, so
everything here follows from signatures, never from what a server said: who is
a member now, who was a member at any op index, every key the log recorded
for a user, who added whom and when, and the latest departure.

This module must never do I/O, nor trust anything but the ops it applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from curvechat.crypto.membership import GENESIS_PREV, Member, MemberState, epoch_is_stale
from curvechat.crypto.membership_rules import apply_op
from curvechat.protocol import messages as m


@dataclass
class RoomLog:
    room: str
    _members: dict[str, Member]
    """Who is a member now: the log's own dict, changed in place by `apply`
    (a copy per op made loading a log of n adds cost n^2: 15 s for 30,000)."""
    _index: int = -1
    _head: bytes = GENESIS_PREV
    _state: MemberState | None = None
    """`state`, made when asked for and kept until the next op."""
    spans: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)
    """user -> [(index of the op that made them a member, index of the op
    that ended it or None)]: a member at op i iff start <= i < end."""
    logged_keys: dict[str, bytes] = field(default_factory=dict)
    """user -> the identity key the log recorded for them most recently."""
    adds: list[tuple[int, str, str]] = field(default_factory=list)
    """(index, actor, target) of every create and add op."""
    adders: dict[str, str] = field(default_factory=dict)
    """member -> the actor of the op that made them a member as they are now."""
    last_departure: int = -1
    """Index of the latest remove or leave op (-1: none)."""

    @classmethod
    def empty(cls, room: str) -> RoomLog:
        return cls(room=room, _members={})

    @property
    def state(self) -> MemberState:
        """The membership after the log (an immutable copy)."""
        if self._state is None:
            self._state = MemberState(self.room, self._index, self._head, self._members)
        return self._state

    @property
    def index(self) -> int:
        return self._index

    def apply(
        self, signed: m.SignedOp, check: Callable[[m.MemberOp], None] | None = None
    ) -> m.MemberOp:
        """Extend the log by `signed`, if `check` (given the verified op)
        does not refuse it by raising. Raises MembershipError, or what
        `check` raised: nothing changed."""
        op, head = apply_op(self.room, self._index, self._head, self._members, signed, check)
        self._index, self._head, self._state = op.index, head, None
        if op.kind in ("create", "add"):
            self.spans.setdefault(op.target, []).append((op.index, None))
            self.logged_keys[op.target] = op.target_key
            self.adds.append((op.index, op.actor, op.target))
            self.adders[op.target] = op.actor
        elif op.kind in ("remove", "leave"):
            self.adders.pop(op.target, None)
            spans = self.spans[op.target]
            start, _ = spans[-1]
            spans[-1] = (start, op.index)
            self.last_departure = op.index
        return op

    def is_member(self, user: str) -> bool:
        return user in self._members

    def was_member_at(self, user: str, index: int) -> bool:
        """Whether `user` was a member right after op `index`."""
        return any(
            start <= index and (end is None or index < end)
            for start, end in self.spans.get(user, [])
        )

    def member_since(self, user: str, index: int) -> bool:
        """Whether `user` was a member right after some op at or after `index`."""
        return any(end is None or end > index for _start, end in self.spans.get(user, []))

    def added(self, actor: str, target: str) -> list[int]:
        """Indices of the ops by which `actor` added `target`."""
        return [i for i, a, t in self.adds if a == actor and t == target and a != t]

    def adder(self, user: str) -> str | None:
        """Who made `user` a member as they are now: the actor of the op that
        added them (themselves, for the room's creator); None if they are
        not a member."""
        return self.adders.get(user)

    def stale(self, epoch_after_op: int) -> bool:
        """Whether an epoch based on op `epoch_after_op` may no longer be used."""
        return epoch_is_stale(self.last_departure, epoch_after_op)
