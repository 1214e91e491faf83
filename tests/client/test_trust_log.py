"""The verified membership log (`client/trust/log.py`): a log of n ops is
applied in time linear in n. Each op used to copy the room's whole member
table (`MemberState.apply`), so a room a stranger filled with 30,000
puppets stalled the client's event loop for 12-16 s at each start."""

from __future__ import annotations

import pytest

from curvechat.client.trust import log as log_module
from curvechat.client.trust.log import RoomLog
from curvechat.crypto.errors import MembershipError
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, replay, sign_op
from curvechat.protocol import messages as m

from support.counting import count_calls


def _ops(count: int) -> list[m.SignedOp]:
    owner, puppet = Identity.generate("owner"), Identity.generate("puppet")
    state = MemberState.empty("big")
    ops = []
    for i in range(count):
        user, key = ("owner", owner.sign_pub) if i == 0 else (f"p{i:05d}", puppet.sign_pub)
        op = state.next_op("create" if i == 0 else "add", "owner", user, key, 1)
        signed = sign_op(owner, op)
        state, _ = state.apply(signed)
        ops.append(signed)
    return ops


def test_a_long_log_makes_one_member_table_not_one_per_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ops = _ops(1_500)
    made = count_calls(monkeypatch, log_module, "MemberState")
    log = RoomLog.empty("big")
    for signed in ops:
        log.apply(signed)
    assert made == [0]
    assert log.is_member("p01499") and log.index == 1_499
    assert log.state == replay("big", ops)
    assert made == [1]
    assert log.state is log.state  # kept until the next op


def test_an_op_refused_by_the_check_changes_nothing() -> None:
    ops = _ops(3)
    log = RoomLog.empty("big")
    log.apply(ops[0])
    before = log.state

    def refuse(op: m.MemberOp) -> None:
        raise MembershipError("forbidden", "no")

    with pytest.raises(MembershipError):
        log.apply(ops[1], check=refuse)
    assert log.state == before and not log.is_member("p00001") and log.index == 0
    assert log.adds == [(0, "owner", "owner")]
    log.apply(ops[1])
    assert log.is_member("p00001")


def test_the_adder_is_who_made_a_member_what_they_are_now() -> None:
    """Who put a user in the room (`curvechat leave --added-by`): the actor
    of the op that made them a member as they are now, not of an earlier
    membership; nobody for a user who is not a member."""
    alice, bob, carol = (Identity.generate(u) for u in ("alice", "bob", "carol"))
    log = RoomLog.empty("r")

    def do(actor: Identity, kind: m.OpKind, target: Identity) -> None:
        op = log.state.next_op(kind, actor.user, target.user, target.sign_pub, 1)
        log.apply(sign_op(actor, op))

    do(alice, "create", alice)
    do(alice, "add", bob)
    do(alice, "promote", bob)
    assert (log.adder("alice"), log.adder("bob"), log.adder("carol")) == ("alice", "alice", None)
    do(bob, "add", carol)
    do(carol, "leave", carol)
    assert log.adder("carol") is None
    do(alice, "add", carol)
    assert log.adder("carol") == "alice"
