"""A room's membership log: its state after a prefix of the log, and the
replay of a whole log.

The server and every client run this same code on the same log: the server
to decide whether to accept an op, a client to check, without trusting the
server, who is in a room before it encrypts anything for them. The rules
themselves (what each kind of op requires, and what it does) are the table
in crypto/membership_rules.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from curvechat.crypto.identity import Identity
from curvechat.crypto.membership_rules import (
    COMMON_CHECKS,
    DOMAIN_OP,
    RULES,
    Cond,
    Effect,
    Member,
    Requirement,
    Rule,
    apply_op,
    op_hash,
)
from curvechat.protocol import limits
from curvechat.protocol.codec import encode
from curvechat.protocol.messages import MemberOp, OpKind, SignedOp

__all__ = [
    "COMMON_CHECKS",
    "DOMAIN_OP",
    "GENESIS_PREV",
    "RULES",
    "Cond",
    "Effect",
    "Member",
    "MemberState",
    "Requirement",
    "Rule",
    "epoch_is_stale",
    "op_hash",
    "replay",
    "sign_op",
]

GENESIS_PREV: Final = bytes(32)


def sign_op(identity: Identity, op: MemberOp) -> SignedOp:
    """Encode `op` and sign it; `identity` must be the op's actor."""
    if op.actor != identity.user:
        raise ValueError(f"{identity.user!r} cannot sign an op whose actor is {op.actor!r}")
    data = encode(op)
    return SignedOp(op=data, sig=identity.sign(DOMAIN_OP + data))


class MemberState:
    """The membership of a room after some prefix of its log. Immutable:
    `apply` returns a new state.

    `index` is the index of the last op applied (-1 before the genesis op) and
    `head` its `op_hash` (`GENESIS_PREV` before).
    """

    __slots__ = ("_head", "_index", "_members", "_room")

    _room: str
    _index: int
    _head: bytes
    _members: dict[str, Member]

    def __init__(self, room: str, index: int, head: bytes, members: Mapping[str, Member]) -> None:
        if not limits.is_room_id(room):
            raise ValueError(f"not a valid room id: {room!r}")
        if not -1 <= index <= 2**31:
            raise ValueError(f"index out of range: {index}")
        if not isinstance(head, bytes) or len(head) != 32:
            raise ValueError("head must be exactly 32 bytes long")
        if any(name != member.user for name, member in members.items()):
            raise ValueError("members must be keyed by their user names")
        self._set(room, index, head, dict(members))

    def _set(self, room: str, index: int, head: bytes, members: dict[str, Member]) -> None:
        object.__setattr__(self, "_room", room)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_members", members)

    @classmethod
    def _make(cls, room: str, index: int, head: bytes, members: dict[str, Member]) -> MemberState:
        # For states built by applying ops: valid by construction, and
        # `members` is a dict nobody else holds.
        state = object.__new__(cls)
        state._set(room, index, head, members)
        return state

    @classmethod
    def empty(cls, room: str) -> MemberState:
        """The state of a room before its genesis op."""
        return cls(room, -1, GENESIS_PREV, {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemberState):
            return NotImplemented
        return (self._room, self._index, self._head, self._members) == (
            other._room,
            other._index,
            other._head,
            other._members,
        )

    def __repr__(self) -> str:
        return (
            f"MemberState(room={self._room!r}, index={self._index}, "
            f"head={self._head.hex()[:16]}…, members={sorted(self._members)!r})"
        )

    @property
    def room(self) -> str:
        return self._room

    @property
    def index(self) -> int:
        return self._index

    @property
    def head(self) -> bytes:
        return self._head

    @property
    def members(self) -> dict[str, Member]:
        """A copy: changing it does not change the state."""
        return dict(self._members)

    def is_member(self, user: str) -> bool:
        return user in self._members

    def is_admin(self, user: str) -> bool:
        member = self._members.get(user)
        return member is not None and member.admin

    def key_of(self, user: str) -> bytes | None:
        member = self._members.get(user)
        return None if member is None else member.key

    def next_op(
        self, kind: OpKind, actor: str, target: str, target_key: bytes, ts: int
    ) -> MemberOp:
        """An unsigned op that would extend this state (right room, index, prev)."""
        return MemberOp(
            room=self._room,
            index=self._index + 1,
            prev=self._head,
            kind=kind,
            actor=actor,
            target=target,
            target_key=target_key,
            ts=ts,
        )

    def apply(self, signed: SignedOp) -> tuple[MemberState, MemberOp]:
        """The state after `signed`, and the op it carried.

        Raises `MembershipError` (code BAD_OP, CONFLICT, FORBIDDEN or
        BAD_SIGNATURE) if the op breaks a rule; this state is never changed.
        """
        members = dict(self._members)
        op, head = apply_op(self._room, self._index, self._head, members, signed)
        return MemberState._make(self._room, op.index, head, members), op


def epoch_is_stale(last_departure: int, epoch_after_op: int) -> bool:
    """The one rule, shared by the server and every client, for "this epoch
    may no longer be used": an epoch based on op `epoch_after_op` is stale once
    a member departed (remove or leave) at a later op, because the departed
    member holds its key. `last_departure` is the index of the room's latest
    remove or leave op (-1: none)."""
    return last_departure > epoch_after_op


def replay(room: str, ops: Iterable[SignedOp]) -> MemberState:
    """The state of `room` after its whole log, checking every op.

    Raises `MembershipError` at the first op that does not apply.
    """
    start = MemberState.empty(room)
    index, head, members = start.index, start.head, start.members
    for signed in ops:
        # One dict for the whole replay, rather than a copy per op as `apply`
        # makes: replaying a long log stays linear.
        op, head = apply_op(room, index, head, members, signed)
        index = op.index
    return MemberState._make(room, index, head, members)
