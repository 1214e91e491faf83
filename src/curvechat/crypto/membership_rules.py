"""The rules for extending a room's membership log, as a table, and the
interpreter that applies one op to a state (crypto/membership.py keeps the
state and the replay of a whole log).

What this module must never do: accept an op that any requirement of its
row refuses, change the members when an op is refused, or verify an op
with a key the op brings along (but for the genesis op).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, NamedTuple, NoReturn

import msgspec
import nacl.encoding
import nacl.hash

from curvechat.crypto.errors import BadSignature, MembershipError
from curvechat.crypto.identity import box_pub_from_sign_pub, verify
from curvechat.protocol import limits
from curvechat.protocol.codec import decode_member_op, encode
from curvechat.protocol.errors import ErrorCode, RemoteProtocolError
from curvechat.protocol.messages import MemberOp, OpKind, SignedOp

DOMAIN_OP: Final = b"curvechat/op/v1\x00"


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


def apply_op(
    room: str,
    index: int,
    head: bytes,
    members: dict[str, Member],
    signed: SignedOp,
    check: Callable[[MemberOp], None] | None = None,
) -> tuple[MemberOp, bytes]:
    """Check `signed` against the state, and `check` (given the verified op,
    it refuses by raising); if both pass, update `members` in place and
    return the op and the new head. If either fails, nothing changed."""
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
    if check is not None:
        check(op)
    _effect(rule.effect, members, op)
    return op, op_hash(signed)
