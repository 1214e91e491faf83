"""The outbox's and the push worker's decisions without I/O: what a send's
answer means, and how a run of pushes is split into bursts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from curvechat.client.errors import NotConnected, NotReady, RequestTimeout, ServerRefused
from curvechat.client.model import OutboxItem
from curvechat.client.outbox import STORE_DOWN_FAILOVER, Outbox
from curvechat.client.pushqueue import bursts
from curvechat.client.sending import RANK, StaleRefusals, TxnIds, Verdict, classify
from curvechat.crypto.errors import CryptoError
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.errors import LocalProtocolError
from curvechat.protocol.limits import TXN_RE


def test_every_answer_has_one_verdict() -> None:
    assert classify(NotConnected("gone")) is Verdict.LOST
    assert classify(RequestTimeout("slow")) is Verdict.LATER
    for code in ("store_unavailable", "rate_limited", "internal"):
        assert classify(ServerRefused(code, "")) is Verdict.LATER
    for code in ("stale_epoch", "conflict"):
        assert classify(ServerRefused(code, "")) is Verdict.STALE
    for code in ("not_member", "too_large", "bad_envelope", "no_such_room"):
        assert classify(ServerRefused(code, "")) is Verdict.FAIL
    assert classify(NotReady("no key", "no_key")) is Verdict.FAIL
    assert classify(CryptoError("x")) is Verdict.FAIL
    assert classify(LocalProtocolError("too_large", "x")) is Verdict.FAIL
    # a lost connection outranks a retry, which outranks a stale epoch
    assert RANK[Verdict.LOST] > RANK[Verdict.LATER] > RANK[Verdict.STALE] > RANK[Verdict.FAIL]


def _push(room: str, seq: int) -> m.MessagePush:
    env = m.Envelope(
        room=room,
        epoch=0,
        sender="alice",
        txn=f"txn-{room}-{seq:08d}",
        nonce=bytes(24),
        ct=bytes(16),
        sig=bytes(64),
    )
    return m.MessagePush(room=room, message=m.StoredMessage(seq=seq, ts=1, envelope=env))


def test_bursts_keep_each_rooms_order_and_other_pushes_in_place() -> None:
    a1, b1, a2, b2, a3 = _push("a", 1), _push("b", 1), _push("a", 2), _push("b", 2), _push("a", 3)
    room = m.RoomPush(room="a", reason="epoch")
    resync = m.Resync(reason="budget")
    assert bursts([a1, b1, a2, b2]) == [[a1, a2], [b1, b2]]
    assert bursts([a1, b1, room, a2, resync, a3, b2]) == [
        [a1],
        [b1],
        [room],
        [a2],
        [resync],
        [a3],
        [b2],
    ]
    assert bursts([room]) == [[room]]
    assert bursts([]) == []


def test_a_failed_commit_counts_once_toward_leaving_the_node() -> None:
    """One failed commit answers every send of its group store_unavailable:
    that is one pass with the store down, not one per send. The client
    tries another node after STORE_DOWN_FAILOVER such passes in a row."""
    dropped: list[str] = []
    conn = SimpleNamespace(addresses=["a", "b"], drop=lambda reason, failed: dropped.append(reason))
    parts: Any = SimpleNamespace(conn=conn, emit=lambda event: None)
    box = Outbox(parts, None, rotate_after_messages=100, rotate_after_seconds=60)  # type: ignore[arg-type]
    item = OutboxItem(1, "r", "txn", "text", 0)
    refused = ServerRefused(ErrorCode.STORE_UNAVAILABLE, "no quorum")
    for n in range(1, STORE_DOWN_FAILOVER + 1):
        box._begin_pass()
        for _ in range(32):  # the sends of one frame, one commit
            assert box._judge(None, {}, item, 0, refused, None) is Verdict.LATER
        assert len(dropped) == (1 if n == STORE_DOWN_FAILOVER else 0), n


def test_txn_ids_are_valid_unique_and_in_order_and_each_sender_draws_its_own() -> None:
    one, two = TxnIds(), TxnIds()
    firsts = [one() for _ in range(2000)]
    assert all(TXN_RE.fullmatch(t) for t in firsts)
    assert len(set(firsts)) == 2000
    assert firsts == sorted(firsts)  # the indexes they key grow at one end
    seconds = [two() for _ in range(10)]
    assert not set(firsts) & set(seconds)
    assert firsts[0][:22] != seconds[0][:22]  # 16 random bytes each


async def test_each_room_counts_its_own_txn_ids() -> None:
    """What a room's members see of a sender's ids counts nothing sent elsewhere."""
    queued: dict[str, list[str]] = {}
    parts: Any = SimpleNamespace(
        cache=SimpleNamespace(
            room=lambda room: SimpleNamespace(left=False),
            enqueue_many=lambda room, txns, texts: queued.setdefault(room, []).extend(txns),
        ),
        core=SimpleNamespace(refuse_if_key_changed=lambda room: None),
    )
    box = Outbox(parts, None, rotate_after_messages=100, rotate_after_seconds=60)  # type: ignore[arg-type]
    box.queue_many("a", ["one"])
    box.queue_many("b", ["x"] * 5)
    box.queue_many("a", ["two"])
    a, b = queued["a"], queued["b"]
    assert a[0][:22] != b[0][:22]
    assert [int(t[22:]) for t in a] == [1, 2]  # the five sent to b left no gap in a


def test_a_stale_refusal_counts_unless_it_taught_a_newer_epoch_than_any_refused() -> None:
    """Another member's rotation counts nothing; a server that lowers the
    epoch, then raises it back, is counted each time, and the send fails
    past the limit."""
    stale = StaleRefusals(limit=2)
    assert stale.refused("t", 2, 3) == (True, False)  # someone rotated: 3 is new
    assert stale.refused("t", 3, 1) == (False, False)  # the server says 1: counted
    assert stale.refused("t", 1, 3) == (False, False)  # back up to 3, refused before
    assert stale.refused("t", 3, 3) == (False, True)  # past the limit: it fails
    stale.done("t")
    assert stale.refused("t", 0, None) == (False, False)  # a send of its own again
