"""A room's membership log and the rules for extending it.

The server and every client run this same code on the same log: the server
to decide whether to accept an op, a client to check, without trusting the
server, who is in a room before it encrypts anything for them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final, NamedTuple, NoReturn

import msgspec
import nacl.encoding
import nacl.hash

from curvechat.crypto.errors import BadSignature, MembershipError
from curvechat.crypto.identity import Identity, box_pub_from_sign_pub, verify
from curvechat.protocol import limits
from curvechat.protocol.codec import decode_member_op, encode
from curvechat.protocol.errors import ErrorCode, RemoteProtocolError
from curvechat.protocol.messages import MemberOp, OpKind, SignedOp

DOMAIN_OP: Final = b"curvechat/op/v1\x00"
GENESIS_PREV: Final = bytes(32)


def sign_op(identity: Identity, op: MemberOp) -> SignedOp:
    """Encode `op` and sign it; `identity` must be the op's actor."""
    if op.actor != identity.user:
        raise ValueError(f"{identity.user!r} cannot sign an op whose actor is {op.actor!r}")
    data = encode(op)
    return SignedOp(op=data, sig=identity.sign(DOMAIN_OP + data))


def op_hash(signed: SignedOp) -> bytes:
    """The hash the next op's `prev` must carry: blake2b-256 of op and signature."""
    return nacl.hash.blake2b(
        signed.op + signed.sig, digest_size=32, encoder=nacl.encoding.RawEncoder
    )


class Member(msgspec.Struct, frozen=True):
    """A current member: name, Ed25519 identity key, and whether an admin."""

    user: str
    key: bytes
    admin: bool

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != 32:
            raise ValueError("a member's key must be exactly 32 bytes long")


# Theory of operation
# ===================
#
# A room's membership is not stored as a list of members but derived from a
# log of signed ops, replayed from the start. Every op names its room, its
# position (`index`, from 0) and the hash of the op before it (`prev`; all
# zeros for the first), so the log is a hash chain: an op is valid only in
# the one place it was made for, and ops cannot be dropped, reordered,
# duplicated or moved between rooms without breaking the chain. Whoever holds
# the log (the server) can refuse to extend it or withhold its tail, but
# cannot forge, alter or reorder what members signed.
#
# An op is applied to a state (room, index of its last op, hash of its last
# op, members) in three steps, and refused at the first check that fails,
# with the error code listed beside that check:
#
# 1. its bytes must decode as a `MemberOp` and be exactly what `encode`
#    produces for it (BAD_OP): one op has one encoding, hence one hash;
# 2. COMMON_CHECKS, for ops of every kind: right room, next index, right prev;
# 3. the row of RULES for the op's kind: its requirements (a condition and
#    the code to refuse with), checked in order, then its effect. Each row
#    first establishes who signed the op, then what that signer may do:
#
#    - "create" is the genesis op. Nobody is a member yet, so it is verified
#      with the key it carries itself (`target_key`), and it makes its actor
#      (who must also be its target) the first member and an admin. Whether
#      that key really belongs to the creator is the caller's business: the
#      server checks the registered key, a client its pinned key.
#    - every other op must come from a current member and verify with the
#      key the log recorded for that member when they were added, never with
#      a key the op brings along.
#    - admins add, remove and promote; anyone may leave, but only themselves.
#    - ops that name an existing member (remove, leave, promote) must name
#      them with the key the log recorded, so an op signed in a moment of
#      confusion about who "bob" is cannot apply to another bob.
#    - a direct-message room ("@a:b") only ever contains a and b.
#
# Only when every check has passed is the op's effect applied, so a refused
# op changes nothing. The state after an op is a pure function of the log up
# to it: the server and all clients that accept the same log agree on it.
#
# The tables below are the rules; `apply` only interprets them, and the tests
# read them to make sure every requirement is exercised both ways.


class Cond(enum.Enum):
    """A condition an op must satisfy; the value says it in words."""

    ROOM_MATCHES = "the op is for this room"
    NEXT_INDEX = "the op's index follows the last op's"
    PREV_IS_HEAD = "the op's prev is the hash of the last op"
    GENESIS = "the log is empty"
    SIGNED_BY_TARGET_KEY = "the op is signed with its own target key"
    ACTOR_IS_MEMBER = "the actor is a member"
    SIGNED_BY_ACTOR = "the op is signed with the actor's recorded key"
    ACTOR_IS_ADMIN = "the actor is an admin"
    ACTOR_IS_TARGET = "the actor is the target"
    ACTOR_IS_NOT_TARGET = "the actor is not the target"
    TARGET_IS_MEMBER = "the target is a member"
    TARGET_NOT_MEMBER = "the target is not a member"
    TARGET_NOT_ADMIN = "the target is not an admin"
    TARGET_KEY_RECORDED = "the target key is the target's recorded key"
    TARGET_KEY_VALID = "the target key is a valid Ed25519 key"
    DM_PAIR = "in a direct-message room, the target is one of its two users"
    DM_NOT_FULL = "a direct-message room has fewer than two members"


class Effect(enum.Enum):
    ADD_ADMIN = "the target becomes a member and an admin"
    ADD_MEMBER = "the target becomes a member"
    REMOVE = "the target is no longer a member"
    PROMOTE = "the target becomes an admin"


class Requirement(NamedTuple):
    cond: Cond
    code: ErrorCode


class Rule(NamedTuple):
    requires: tuple[Requirement, ...]
    effect: Effect


_R = Requirement
_E = ErrorCode

COMMON_CHECKS: Final[tuple[Requirement, ...]] = (
    _R(Cond.ROOM_MATCHES, _E.BAD_OP),
    _R(Cond.NEXT_INDEX, _E.CONFLICT),
    _R(Cond.PREV_IS_HEAD, _E.CONFLICT),
)

RULES: Final[Mapping[OpKind, Rule]] = MappingProxyType(
    {
        "create": Rule(
            requires=(
                _R(Cond.SIGNED_BY_TARGET_KEY, _E.BAD_SIGNATURE),
                _R(Cond.GENESIS, _E.BAD_OP),
                _R(Cond.ACTOR_IS_TARGET, _E.BAD_OP),
                _R(Cond.DM_PAIR, _E.FORBIDDEN),
            ),
            effect=Effect.ADD_ADMIN,
        ),
        "add": Rule(
            requires=(
                _R(Cond.ACTOR_IS_MEMBER, _E.FORBIDDEN),
                _R(Cond.SIGNED_BY_ACTOR, _E.BAD_SIGNATURE),
                _R(Cond.ACTOR_IS_ADMIN, _E.FORBIDDEN),
                _R(Cond.TARGET_NOT_MEMBER, _E.BAD_OP),
                _R(Cond.TARGET_KEY_VALID, _E.BAD_OP),
                _R(Cond.DM_PAIR, _E.FORBIDDEN),
                _R(Cond.DM_NOT_FULL, _E.FORBIDDEN),
            ),
            effect=Effect.ADD_MEMBER,
        ),
        "remove": Rule(
            requires=(
                _R(Cond.ACTOR_IS_MEMBER, _E.FORBIDDEN),
                _R(Cond.SIGNED_BY_ACTOR, _E.BAD_SIGNATURE),
                _R(Cond.ACTOR_IS_ADMIN, _E.FORBIDDEN),
                _R(Cond.TARGET_IS_MEMBER, _E.BAD_OP),
                _R(Cond.ACTOR_IS_NOT_TARGET, _E.BAD_OP),
                _R(Cond.TARGET_KEY_RECORDED, _E.BAD_OP),
            ),
            effect=Effect.REMOVE,
        ),
        "leave": Rule(
            requires=(
                _R(Cond.ACTOR_IS_MEMBER, _E.FORBIDDEN),
                _R(Cond.SIGNED_BY_ACTOR, _E.BAD_SIGNATURE),
                _R(Cond.ACTOR_IS_TARGET, _E.FORBIDDEN),
                _R(Cond.TARGET_KEY_RECORDED, _E.BAD_OP),
            ),
            effect=Effect.REMOVE,
        ),
        "promote": Rule(
            requires=(
                _R(Cond.ACTOR_IS_MEMBER, _E.FORBIDDEN),
                _R(Cond.SIGNED_BY_ACTOR, _E.BAD_SIGNATURE),
                _R(Cond.ACTOR_IS_ADMIN, _E.FORBIDDEN),
                _R(Cond.TARGET_IS_MEMBER, _E.BAD_OP),
                _R(Cond.TARGET_NOT_ADMIN, _E.BAD_OP),
                _R(Cond.TARGET_KEY_RECORDED, _E.BAD_OP),
            ),
            effect=Effect.PROMOTE,
        ),
    }
)


class _Ctx(NamedTuple):
    """An op being applied and the state it is applied to."""

    room: str
    last_index: int
    head: bytes
    members: Mapping[str, Member]
    op: MemberOp
    signed: SignedOp


def _verifies(key: bytes, signed: SignedOp) -> bool:
    try:
        verify(key, DOMAIN_OP + signed.op, signed.sig)
    except BadSignature:
        return False
    return True


def _valid_key(key: bytes) -> bool:
    try:
        box_pub_from_sign_pub(key)
    except BadSignature:
        return False
    return True


def _dm_pair(ctx: _Ctx) -> bool:
    pair = limits.dm_members(ctx.room)
    return pair is None or ctx.op.target in pair


def _dm_not_full(ctx: _Ctx) -> bool:
    return limits.dm_members(ctx.room) is None or len(ctx.members) < 2


def _signed_by_actor(ctx: _Ctx) -> bool:
    # ACTOR_IS_MEMBER always comes first, so the actor has a recorded key.
    return _verifies(ctx.members[ctx.op.actor].key, ctx.signed)


def _target_key_recorded(ctx: _Ctx) -> bool:
    member = ctx.members.get(ctx.op.target)
    return member is not None and member.key == ctx.op.target_key


_PREDICATES: Final[Mapping[Cond, Callable[[_Ctx], bool]]] = MappingProxyType(
    {
        Cond.ROOM_MATCHES: lambda c: c.op.room == c.room,
        Cond.NEXT_INDEX: lambda c: c.op.index == c.last_index + 1,
        Cond.PREV_IS_HEAD: lambda c: c.op.prev == c.head,
        Cond.GENESIS: lambda c: c.last_index == -1 and not c.members,
        Cond.SIGNED_BY_TARGET_KEY: lambda c: _verifies(c.op.target_key, c.signed),
        Cond.ACTOR_IS_MEMBER: lambda c: c.op.actor in c.members,
        Cond.SIGNED_BY_ACTOR: _signed_by_actor,
        Cond.ACTOR_IS_ADMIN: lambda c: c.op.actor in c.members and c.members[c.op.actor].admin,
        Cond.ACTOR_IS_TARGET: lambda c: c.op.actor == c.op.target,
        Cond.ACTOR_IS_NOT_TARGET: lambda c: c.op.actor != c.op.target,
        Cond.TARGET_IS_MEMBER: lambda c: c.op.target in c.members,
        Cond.TARGET_NOT_MEMBER: lambda c: c.op.target not in c.members,
        Cond.TARGET_NOT_ADMIN: lambda c: (
            c.op.target in c.members and not c.members[c.op.target].admin
        ),
        Cond.TARGET_KEY_RECORDED: _target_key_recorded,
        Cond.TARGET_KEY_VALID: lambda c: _valid_key(c.op.target_key),
        Cond.DM_PAIR: _dm_pair,
        Cond.DM_NOT_FULL: _dm_not_full,
    }
)


def _effect(effect: Effect, members: dict[str, Member], op: MemberOp) -> None:
    if effect is Effect.ADD_ADMIN:
        members[op.target] = Member(user=op.target, key=op.target_key, admin=True)
    elif effect is Effect.ADD_MEMBER:
        members[op.target] = Member(user=op.target, key=op.target_key, admin=False)
    elif effect is Effect.REMOVE:
        del members[op.target]
    elif effect is Effect.PROMOTE:
        members[op.target] = msgspec.structs.replace(members[op.target], admin=True)
    else:  # pragma: no cover - every Effect is handled above
        raise AssertionError(effect)


def _refuse(code: ErrorCode, message: str) -> NoReturn:
    raise MembershipError(code, message)


def _apply(
    room: str, index: int, head: bytes, members: dict[str, Member], signed: SignedOp
) -> tuple[MemberOp, bytes]:
    """Check `signed` against the state; if it passes, update `members` in
    place and return the op and the new head. If it fails, nothing changed."""
    if len(signed.op) > limits.MAX_OP_BYTES:
        _refuse(ErrorCode.BAD_OP, f"op of {len(signed.op)} bytes")
    try:
        op = decode_member_op(signed.op)
    except RemoteProtocolError as exc:
        raise MembershipError(ErrorCode.BAD_OP, exc.message) from exc
    if encode(op) != signed.op:
        _refuse(ErrorCode.BAD_OP, "op is not canonically encoded")
    ctx = _Ctx(room=room, last_index=index, head=head, members=members, op=op, signed=signed)
    rule = RULES[op.kind]
    for req in (*COMMON_CHECKS, *rule.requires):
        if not _PREDICATES[req.cond](ctx):
            _refuse(
                req.code,
                f"{op.kind} of {op.target!r} by {op.actor!r} at index {op.index} "
                f"refused: requires that {req.cond.value}",
            )
    _effect(rule.effect, members, op)
    return op, op_hash(signed)


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
        op, head = _apply(self._room, self._index, self._head, members, signed)
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
        op, head = _apply(room, index, head, members, signed)
        index = op.index
    return MemberState._make(room, index, head, members)
