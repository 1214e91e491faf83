"""The membership log: every rule of the transition table, accepted and
refused, whole-log replay, and tampered logs.

The refusal cases are keyed by (op kind, condition) and checked against
`RULES` itself, so a rule added to the table without a test here fails.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import nacl.encoding
import nacl.hash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvechat.crypto import (
    DOMAIN_OP,
    GENESIS_PREV,
    RULES,
    Identity,
    Member,
    MembershipError,
    MemberState,
    op_hash,
    replay,
    sign_op,
)
from curvechat.crypto.membership import COMMON_CHECKS, Cond, Effect
from curvechat.crypto.membership_rules import _PREDICATES
from curvechat.protocol import encode
from curvechat.protocol.errors import ErrorCode
from curvechat.protocol.messages import MemberOp, OpKind, SignedOp

ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")
CAROL = Identity.generate("carol")
DAVE = Identity.generate("dave")
MALLORY = Identity.generate("mallory")
PEOPLE = {i.user: i for i in (ALICE, BOB, CAROL, DAVE, MALLORY)}

ROOM = "general"
DM = "@alice:bob"


def make_op(
    state: MemberState,
    kind: OpKind,
    actor: str,
    target: str,
    key: bytes | None = None,
    **changes: object,
) -> MemberOp:
    op = state.next_op(kind, actor, target, PEOPLE[target].sign_pub if key is None else key, 0)
    return msgspec.structs.replace(op, **changes) if changes else op


def forge(signer: Identity, op: MemberOp) -> SignedOp:
    """Sign `op` with any key, whoever its actor is."""
    data = encode(op)
    return SignedOp(op=data, sig=signer.sign(DOMAIN_OP + data))


def signed(
    state: MemberState,
    kind: OpKind,
    actor: str,
    target: str,
    key: bytes | None = None,
    *,
    signer: Identity | None = None,
    **changes: object,
) -> SignedOp:
    op = make_op(state, kind, actor, target, key, **changes)
    return forge(PEOPLE[actor] if signer is None else signer, op)


def run(room: str, *steps: tuple[OpKind, str, str]) -> tuple[MemberState, list[SignedOp]]:
    state = MemberState.empty(room)
    log: list[SignedOp] = []
    for kind, actor, target in steps:
        s = sign_op(PEOPLE[actor], make_op(state, kind, actor, target))
        state, _ = state.apply(s)
        log.append(s)
    return state, log


def group() -> MemberState:
    """alice (admin), bob and carol."""
    return run(
        ROOM, ("create", "alice", "alice"), ("add", "alice", "bob"), ("add", "alice", "carol")
    )[0]


def dm() -> MemberState:
    return run(DM, ("create", "alice", "alice"), ("add", "alice", "bob"))[0]


def refused(state: MemberState, op: SignedOp) -> MembershipError:
    before = (state.room, state.index, state.head, state.members)
    with pytest.raises(MembershipError) as info:
        state.apply(op)
    assert (state.room, state.index, state.head, state.members) == before
    return info.value


# --- the transition table ----------------------------------------------------

Case = Callable[[], tuple[MemberState, SignedOp]]


def _dm_with_stray_member() -> tuple[MemberState, SignedOp]:
    # Unreachable through ops (DM_PAIR and TARGET_NOT_MEMBER prevent it); the
    # size check is a second line of defence, so it is tested on a hand-built
    # state.
    members = {
        "alice": Member(user="alice", key=ALICE.sign_pub, admin=True),
        "carol": Member(user="carol", key=CAROL.sign_pub, admin=False),
    }
    state = MemberState(DM, 1, bytes(range(32)), members)
    return state, signed(state, "add", "alice", "bob")


REFUSALS: dict[tuple[OpKind, Cond], Case] = {
    # create
    ("create", Cond.SIGNED_BY_TARGET_KEY): lambda: (
        (s := MemberState.empty(ROOM)),
        signed(s, "create", "alice", "alice", signer=MALLORY),
    ),
    ("create", Cond.GENESIS): lambda: ((s := group()), signed(s, "create", "dave", "dave")),
    ("create", Cond.ACTOR_IS_TARGET): lambda: (
        (s := MemberState.empty(ROOM)),
        signed(s, "create", "alice", "bob", signer=BOB),
    ),
    ("create", Cond.DM_PAIR): lambda: (
        (s := MemberState.empty(DM)),
        signed(s, "create", "carol", "carol"),
    ),
    # add
    ("add", Cond.ACTOR_IS_MEMBER): lambda: ((s := group()), signed(s, "add", "dave", "mallory")),
    ("add", Cond.SIGNED_BY_ACTOR): lambda: (
        (s := group()),
        signed(s, "add", "alice", "dave", signer=MALLORY),
    ),
    ("add", Cond.ACTOR_IS_ADMIN): lambda: ((s := group()), signed(s, "add", "bob", "dave")),
    ("add", Cond.TARGET_NOT_MEMBER): lambda: ((s := group()), signed(s, "add", "alice", "bob")),
    ("add", Cond.TARGET_KEY_VALID): lambda: (
        (s := group()),
        signed(s, "add", "alice", "dave", bytes(32)),
    ),
    ("add", Cond.DM_PAIR): lambda: ((s := dm()), signed(s, "add", "alice", "carol")),
    ("add", Cond.DM_NOT_FULL): _dm_with_stray_member,
    # remove
    ("remove", Cond.ACTOR_IS_MEMBER): lambda: ((s := group()), signed(s, "remove", "dave", "bob")),
    ("remove", Cond.SIGNED_BY_ACTOR): lambda: (
        (s := group()),
        signed(s, "remove", "alice", "bob", signer=MALLORY),
    ),
    ("remove", Cond.ACTOR_IS_ADMIN): lambda: ((s := group()), signed(s, "remove", "bob", "carol")),
    ("remove", Cond.TARGET_IS_MEMBER): lambda: (
        (s := group()),
        signed(s, "remove", "alice", "dave"),
    ),
    ("remove", Cond.ACTOR_IS_NOT_TARGET): lambda: (
        (s := group()),
        signed(s, "remove", "alice", "alice"),
    ),
    ("remove", Cond.TARGET_KEY_RECORDED): lambda: (
        (s := group()),
        signed(s, "remove", "alice", "bob", CAROL.sign_pub),
    ),
    # leave
    ("leave", Cond.ACTOR_IS_MEMBER): lambda: ((s := group()), signed(s, "leave", "dave", "dave")),
    ("leave", Cond.SIGNED_BY_ACTOR): lambda: (
        (s := group()),
        signed(s, "leave", "bob", "bob", signer=MALLORY),
    ),
    ("leave", Cond.ACTOR_IS_TARGET): lambda: ((s := group()), signed(s, "leave", "bob", "carol")),
    ("leave", Cond.TARGET_KEY_RECORDED): lambda: (
        (s := group()),
        signed(s, "leave", "bob", "bob", MALLORY.sign_pub),
    ),
    # promote
    ("promote", Cond.ACTOR_IS_MEMBER): lambda: (
        (s := group()),
        signed(s, "promote", "dave", "bob"),
    ),
    ("promote", Cond.SIGNED_BY_ACTOR): lambda: (
        (s := group()),
        signed(s, "promote", "alice", "bob", signer=MALLORY),
    ),
    ("promote", Cond.ACTOR_IS_ADMIN): lambda: (
        (s := group()),
        signed(s, "promote", "bob", "carol"),
    ),
    ("promote", Cond.TARGET_IS_MEMBER): lambda: (
        (s := group()),
        signed(s, "promote", "alice", "dave"),
    ),
    ("promote", Cond.TARGET_NOT_ADMIN): lambda: (
        (s := group()),
        signed(s, "promote", "alice", "alice"),
    ),
    ("promote", Cond.TARGET_KEY_RECORDED): lambda: (
        (s := group()),
        signed(s, "promote", "alice", "bob", CAROL.sign_pub),
    ),
}


def _table() -> list[tuple[OpKind, Cond, ErrorCode]]:
    return [(kind, req.cond, req.code) for kind, rule in RULES.items() for req in rule.requires]


def test_every_rule_has_a_refusal_case() -> None:
    assert set(REFUSALS) == {(kind, cond) for kind, cond, _ in _table()}


def test_every_condition_is_used_and_defined() -> None:
    used = {req.cond for req in COMMON_CHECKS} | {cond for _, cond, _ in _table()}
    assert used == set(Cond)
    assert set(_PREDICATES) == set(Cond)


def test_table_covers_every_op_kind() -> None:
    assert set(RULES) == {"create", "add", "remove", "leave", "promote"}


def test_signer_is_established_before_anything_else() -> None:
    # Authorisation decided on unauthenticated data would leak, and could
    # misattribute, refusals: every row checks its signature first (after,
    # for non-genesis ops, finding the actor's recorded key).
    for kind, rule in RULES.items():
        conds = [req.cond for req in rule.requires]
        if kind == "create":
            assert conds[0] is Cond.SIGNED_BY_TARGET_KEY
        else:
            assert conds[:2] == [Cond.ACTOR_IS_MEMBER, Cond.SIGNED_BY_ACTOR]


@pytest.mark.parametrize(("kind", "cond", "code"), _table(), ids=lambda v: getattr(v, "name", v))
def test_refusal(kind: OpKind, cond: Cond, code: ErrorCode) -> None:
    state, op = REFUSALS[(kind, cond)]()
    assert msgspec.msgpack.decode(op.op, type=MemberOp).kind == kind
    err = refused(state, op)
    assert err.code == code
    # The message names the condition, so this case failed where intended
    # and not at an earlier check with the same code.
    assert cond.value in err.message


ACCEPTS: dict[OpKind, Callable[[], tuple[MemberState, SignedOp, str]]] = {
    "create": lambda: (
        (s := MemberState.empty(ROOM)),
        signed(s, "create", "alice", "alice"),
        "alice",
    ),
    "add": lambda: ((s := group()), signed(s, "add", "alice", "dave"), "dave"),
    "remove": lambda: ((s := group()), signed(s, "remove", "alice", "bob"), "bob"),
    "leave": lambda: ((s := group()), signed(s, "leave", "bob", "bob"), "bob"),
    "promote": lambda: ((s := group()), signed(s, "promote", "alice", "bob"), "bob"),
}


def test_every_kind_has_an_accept_case() -> None:
    assert set(ACCEPTS) == set(RULES)


@pytest.mark.parametrize("kind", list(RULES))
def test_accept(kind: OpKind) -> None:
    state, op, target = ACCEPTS[kind]()
    new, decoded = state.apply(op)
    assert decoded == msgspec.msgpack.decode(op.op, type=MemberOp)
    assert new.room == state.room
    assert new.index == state.index + 1
    assert new.head == op_hash(op)
    effect = RULES[kind].effect
    if effect is Effect.ADD_ADMIN:
        assert new.is_member(target) and new.is_admin(target)
        assert new.key_of(target) == PEOPLE[target].sign_pub
    elif effect is Effect.ADD_MEMBER:
        assert not state.is_member(target)
        assert new.is_member(target) and not new.is_admin(target)
        assert new.key_of(target) == PEOPLE[target].sign_pub
    elif effect is Effect.REMOVE:
        assert state.is_member(target)
        assert not new.is_member(target)
        assert new.key_of(target) is None
    elif effect is Effect.PROMOTE:
        assert not state.is_admin(target)
        assert new.is_admin(target)
    else:  # pragma: no cover
        raise AssertionError(effect)
    # Nobody else changed.
    others = {u: m for u, m in state.members.items() if u != target}
    assert {u: m for u, m in new.members.items() if u != target} == others


# --- checks common to every op ---------------------------------------------------


def test_common_checks_table() -> None:
    assert COMMON_CHECKS == (
        (Cond.ROOM_MATCHES, ErrorCode.BAD_OP),
        (Cond.NEXT_INDEX, ErrorCode.CONFLICT),
        (Cond.PREV_IS_HEAD, ErrorCode.CONFLICT),
    )


COMMON_CASES: dict[Cond, list[dict[str, object]]] = {
    Cond.ROOM_MATCHES: [{"room": "random"}, {"room": DM}],
    Cond.NEXT_INDEX: [{"index": 4}, {"index": 2}, {"index": 0}],
    Cond.PREV_IS_HEAD: [{"prev": GENESIS_PREV}, {"prev": bytes(range(32))}],
}


def test_every_common_check_has_cases() -> None:
    assert set(COMMON_CASES) == {req.cond for req in COMMON_CHECKS}


@pytest.mark.parametrize(
    ("cond", "code", "change", "kind", "actor", "target"),
    [
        (req.cond, req.code, change, kind, actor, target)
        for req in COMMON_CHECKS
        for change in COMMON_CASES[req.cond]
        for kind, actor, target in [
            ("add", "alice", "dave"),
            ("remove", "alice", "bob"),
            ("leave", "bob", "bob"),
            ("promote", "alice", "bob"),
        ]
    ],
)
def test_common_refusal(
    cond: Cond, code: ErrorCode, change: dict[str, object], kind: OpKind, actor: str, target: str
) -> None:
    state = group()
    assert state.index == 2
    err = refused(state, signed(state, kind, actor, target, **change))  # type: ignore[arg-type]
    assert err.code == code
    assert cond.value in err.message


def test_op_for_another_room() -> None:
    state = group()
    other, _ = run("random", ("create", "alice", "alice"))
    # A valid op of the same shape, made for another room, does not apply.
    op = signed(state, "add", "alice", "dave", room="random")
    assert refused(state, op).code == ErrorCode.BAD_OP
    assert refused(other, signed(other, "add", "alice", "dave", room=ROOM)).code == ErrorCode.BAD_OP


def test_wrong_index() -> None:
    state = group()
    assert refused(state, signed(state, "add", "alice", "dave", index=4)).code == ErrorCode.CONFLICT


def test_wrong_prev() -> None:
    state = group()
    op = signed(state, "add", "alice", "dave", prev=GENESIS_PREV)
    assert refused(state, op).code == ErrorCode.CONFLICT


def test_create_in_empty_room_at_wrong_index() -> None:
    state = MemberState.empty(ROOM)
    op = signed(state, "create", "alice", "alice", index=1)
    assert refused(state, op).code == ErrorCode.CONFLICT


def test_first_op_must_be_create() -> None:
    state = MemberState.empty(ROOM)
    assert refused(state, signed(state, "add", "alice", "bob")).code == ErrorCode.FORBIDDEN


# --- signatures and encoding ---------------------------------------------------


def test_forged_signature() -> None:
    state = group()
    good = signed(state, "add", "alice", "dave")
    for i in range(64):
        sig = bytearray(good.sig)
        sig[i] ^= 0x01
        err = refused(state, SignedOp(op=good.op, sig=bytes(sig)))
        assert err.code == ErrorCode.BAD_SIGNATURE
    state.apply(good)


def test_signature_is_domain_separated() -> None:
    state = group()
    op = make_op(state, "add", "alice", "dave")
    bare = SignedOp(op=encode(op), sig=ALICE.sign(encode(op)))
    assert refused(state, bare).code == ErrorCode.BAD_SIGNATURE


def test_signature_checked_with_recorded_key_not_op_key() -> None:
    # Mallory claims to be bob and vouches for her own key in target_key.
    state = group()
    op = signed(state, "leave", "bob", "bob", MALLORY.sign_pub, signer=MALLORY)
    assert refused(state, op).code == ErrorCode.BAD_SIGNATURE


def test_genesis_signature_uses_target_key() -> None:
    state = MemberState.empty(ROOM)
    # Mallory's own create, naming herself "alice" with her key, is accepted
    # by the rules: checking that key is the caller's job (server: registered
    # key; client: pinned key).
    op = signed(state, "create", "alice", "alice", MALLORY.sign_pub, signer=MALLORY)
    new, _ = state.apply(op)
    assert new.key_of("alice") == MALLORY.sign_pub
    # But a create carrying alice's key must be signed by alice's key.
    op = signed(state, "create", "alice", "alice", ALICE.sign_pub, signer=MALLORY)
    assert refused(state, op).code == ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize("sig", [b"", bytes(63), bytes(65)])
def test_malformed_signature_length(sig: bytes) -> None:
    state = group()
    good = signed(state, "add", "alice", "dave")
    assert refused(state, SignedOp(op=good.op, sig=sig)).code == ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode(["general", 3, bytes(32), "ban", "alice", "bob", bytes(32), 0]),
        msgspec.msgpack.encode(["general", 3, bytes(31), "add", "alice", "bob", bytes(32), 0]),
        msgspec.msgpack.encode(["general", 3, bytes(32), "add", "Alice", "bob", bytes(32), 0]),
        msgspec.msgpack.encode(["@bob:alice", 3, bytes(32), "add", "alice", "bob", bytes(32), 0]),
    ],
)
def test_undecodable_op(data: bytes) -> None:
    op = SignedOp(op=data, sig=ALICE.sign(DOMAIN_OP + data))
    assert refused(group(), op).code == ErrorCode.BAD_OP


def test_non_canonical_encoding_is_refused() -> None:
    state = group()
    op = make_op(state, "add", "alice", "dave")
    assert op.ts == 0
    canonical = encode(op)
    assert canonical.endswith(b"\x00")
    # The same op with ts as a 64-bit integer: it decodes to the same MemberOp.
    data = canonical[:-1] + b"\xcf" + bytes(8)
    assert msgspec.msgpack.decode(data, type=MemberOp) == op
    err = refused(state, SignedOp(op=data, sig=ALICE.sign(DOMAIN_OP + data)))
    assert err.code == ErrorCode.BAD_OP


def test_oversized_op_is_refused() -> None:
    data = encode(make_op(group(), "add", "alice", "dave")) + bytes(2000)
    assert refused(group(), SignedOp(op=data, sig=ALICE.sign(DOMAIN_OP + data))).code == (
        ErrorCode.BAD_OP
    )


def test_sign_op() -> None:
    state = group()
    op = make_op(state, "add", "alice", "dave")
    s = sign_op(ALICE, op)
    assert s.op == encode(op)
    assert len(s.sig) == 64
    with pytest.raises(ValueError, match="actor"):
        sign_op(BOB, op)


def test_op_hash() -> None:
    s = sign_op(ALICE, make_op(MemberState.empty(ROOM), "create", "alice", "alice"))
    expected = nacl.hash.blake2b(s.op + s.sig, digest_size=32, encoder=nacl.encoding.RawEncoder)
    assert op_hash(s) == expected
    assert len(op_hash(s)) == 32


# --- specific rules, case by case ----------------------------------------------


def test_non_admin_add() -> None:
    state = group()
    assert refused(state, signed(state, "add", "bob", "dave")).code == ErrorCode.FORBIDDEN


def test_remove_by_non_admin() -> None:
    state = group()
    assert refused(state, signed(state, "remove", "bob", "carol")).code == ErrorCode.FORBIDDEN


def test_leave_by_someone_else() -> None:
    state = group()
    assert refused(state, signed(state, "leave", "alice", "bob")).code == ErrorCode.FORBIDDEN


def test_dm_third_member() -> None:
    state = dm()
    assert set(state.members) == {"alice", "bob"}
    assert refused(state, signed(state, "add", "alice", "carol")).code == ErrorCode.FORBIDDEN


def test_dm_pair_accepts_both_users() -> None:
    state, _ = run(DM, ("create", "bob", "bob"), ("add", "bob", "alice"))
    assert set(state.members) == {"alice", "bob"}
    state, _ = state.apply(signed(state, "leave", "alice", "alice"))
    state, _ = state.apply(signed(state, "add", "bob", "alice"))
    assert set(state.members) == {"alice", "bob"}


def test_promote_then_act_as_admin() -> None:
    state = group()
    state, _ = state.apply(signed(state, "promote", "alice", "bob"))
    assert state.is_admin("bob")
    state, _ = state.apply(signed(state, "add", "bob", "dave"))
    state, _ = state.apply(signed(state, "remove", "bob", "alice"))
    assert set(state.members) == {"bob", "carol", "dave"}


def test_promote_refusals() -> None:
    state = group()
    assert refused(state, signed(state, "promote", "bob", "bob")).code == ErrorCode.FORBIDDEN
    assert refused(state, signed(state, "promote", "alice", "dave")).code == ErrorCode.BAD_OP
    assert refused(state, signed(state, "promote", "alice", "alice")).code == ErrorCode.BAD_OP


def test_removed_member_can_no_longer_act() -> None:
    state = group()
    state, _ = state.apply(signed(state, "remove", "alice", "bob"))
    assert refused(state, signed(state, "leave", "bob", "bob")).code == ErrorCode.FORBIDDEN
    assert refused(state, signed(state, "add", "bob", "dave")).code == ErrorCode.FORBIDDEN


def test_readded_member_gets_new_key() -> None:
    state = group()
    state, _ = state.apply(signed(state, "remove", "alice", "bob"))
    new_bob = Identity.generate("bob")
    state, _ = state.apply(signed(state, "add", "alice", "bob", new_bob.sign_pub))
    assert state.key_of("bob") == new_bob.sign_pub
    # The old key no longer speaks for bob.
    op = signed(state, "leave", "bob", "bob", new_bob.sign_pub, signer=BOB)
    assert refused(state, op).code == ErrorCode.BAD_SIGNATURE
    state.apply(signed(state, "leave", "bob", "bob", new_bob.sign_pub, signer=new_bob))


# --- replaying whole logs ------------------------------------------------------

STORY: list[tuple[OpKind, str, str]] = [
    ("create", "alice", "alice"),
    ("add", "alice", "bob"),
    ("add", "alice", "carol"),
    ("promote", "alice", "bob"),
    ("add", "bob", "dave"),
    ("leave", "carol", "carol"),
    ("remove", "bob", "alice"),
    ("add", "bob", "carol"),
    ("promote", "bob", "dave"),
    ("remove", "dave", "bob"),
]


def story() -> tuple[MemberState, list[SignedOp]]:
    return run(ROOM, *STORY)


def test_replay_whole_chain() -> None:
    state, log = story()
    again = replay(ROOM, log)
    assert again == state
    assert again.index == len(STORY) - 1
    assert again.head == op_hash(log[-1])
    assert again.members == {
        "carol": Member(user="carol", key=CAROL.sign_pub, admin=False),
        "dave": Member(user="dave", key=DAVE.sign_pub, admin=True),
    }
    # Prefixes replay to the intermediate states, and apply() agrees.
    current = MemberState.empty(ROOM)
    for n, op in enumerate(log):
        current, _ = current.apply(op)
        assert replay(ROOM, log[: n + 1]) == current


def test_replay_accepts_any_iterable() -> None:
    state, log = story()
    assert replay(ROOM, iter(log)) == state
    assert replay(ROOM, []) == MemberState.empty(ROOM)


def test_replay_in_another_room_fails() -> None:
    _, log = story()
    with pytest.raises(MembershipError) as info:
        replay("random", log)
    assert info.value.code == ErrorCode.BAD_OP


@pytest.mark.parametrize("i", range(len(STORY) - 1))
def test_swapped_ops_fail(i: int) -> None:
    _, log = story()
    log[i], log[i + 1] = log[i + 1], log[i]
    with pytest.raises(MembershipError) as info:
        replay(ROOM, log)
    assert info.value.code == ErrorCode.CONFLICT


@pytest.mark.parametrize("i", range(len(STORY) - 1))
def test_dropped_op_fails(i: int) -> None:
    _, log = story()
    del log[i]
    with pytest.raises(MembershipError) as info:
        replay(ROOM, log)
    assert info.value.code == ErrorCode.CONFLICT


@pytest.mark.parametrize("i", range(len(STORY)))
def test_duplicated_op_fails(i: int) -> None:
    _, log = story()
    log.insert(i, log[i])
    with pytest.raises(MembershipError) as info:
        replay(ROOM, log)
    assert info.value.code == ErrorCode.CONFLICT


def test_forked_history_fails() -> None:
    # The server substitutes a different, validly signed op at index 3: the
    # rest of the genuine log no longer chains onto it.
    _, log = story()
    at3 = replay(ROOM, log[:3])
    fork = signed(at3, "promote", "alice", "carol")
    with pytest.raises(MembershipError) as info:
        replay(ROOM, [*log[:3], fork, *log[4:]])
    assert info.value.code == ErrorCode.CONFLICT


@pytest.mark.parametrize("i", range(len(STORY)))
def test_tampered_op_in_the_middle_fails(i: int) -> None:
    _, log = story()
    data = bytearray(log[i].op)
    data[-1] ^= 0x01  # the timestamp: still a well-formed op
    log[i] = SignedOp(op=bytes(data), sig=log[i].sig)
    with pytest.raises(MembershipError) as info:
        replay(ROOM, log)
    assert info.value.code == ErrorCode.BAD_SIGNATURE


def test_old_op_replayed_later_fails() -> None:
    state, log = story()
    for op in log:
        assert refused(state, op).code == ErrorCode.CONFLICT


# --- the state object ----------------------------------------------------------


def test_empty_state() -> None:
    state = MemberState.empty(ROOM)
    assert (state.room, state.index, state.head, state.members) == (ROOM, -1, GENESIS_PREV, {})
    assert bytes(32) == GENESIS_PREV
    assert not state.is_member("alice")
    assert not state.is_admin("alice")
    assert state.key_of("alice") is None


def test_state_is_immutable() -> None:
    state = group()
    members = state.members
    members.clear()
    assert state.is_member("alice")
    with pytest.raises(AttributeError):
        state.index = 7  # type: ignore[misc]
    with pytest.raises(AttributeError):
        state._members = {}
    new, _ = state.apply(signed(state, "add", "alice", "dave"))
    assert not state.is_member("dave")
    assert new.is_member("dave")


def test_state_repr() -> None:
    text = repr(group())
    assert "general" in text
    assert "alice" in text


@pytest.mark.parametrize(
    "args",
    [
        ("Bad Room", -1, GENESIS_PREV, {}),
        (ROOM, -2, GENESIS_PREV, {}),
        (ROOM, 0, bytes(31), {}),
        (ROOM, 0, GENESIS_PREV, {"bob": Member(user="alice", key=bytes(32), admin=True)}),
    ],
)
def test_state_constructor_checks(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        MemberState(*args)  # type: ignore[arg-type]


def test_member_checks_key_length() -> None:
    with pytest.raises(ValueError):
        Member(user="alice", key=bytes(31), admin=False)


# --- against an independent model ------------------------------------------------

NAMES = ["alice", "bob", "carol", "dave"]


def model_allows(
    created: bool, members: dict[str, bool], kind: str, actor: str, target: str
) -> bool:
    """The membership rules for a non-DM room, written out independently."""
    if kind == "create":
        return not created and actor == target
    is_admin = members.get(actor, False)
    if kind == "add":
        return is_admin and target not in members
    if kind == "remove":
        return is_admin and target in members and target != actor
    if kind == "leave":
        return actor in members and actor == target
    if kind == "promote":
        return is_admin and target in members and not members[target]
    raise AssertionError(kind)


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(RULES)), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        max_size=25,
    )
)
def test_matches_model(steps: list[tuple[OpKind, str, str]]) -> None:
    state = MemberState.empty(ROOM)
    model: dict[str, bool] = {}
    created = False
    log: list[SignedOp] = []
    for kind, actor, target in steps:
        op = sign_op(PEOPLE[actor], make_op(state, kind, actor, target))
        if model_allows(created, model, kind, actor, target):
            state, _ = state.apply(op)
            log.append(op)
            created = True
            if kind in ("create", "promote"):
                model[target] = True
            elif kind == "add":
                model[target] = False
            else:
                del model[target]
        else:
            refused(state, op)
        assert {u: m.admin for u, m in state.members.items()} == model
    assert replay(ROOM, log) == state
