"""The checker on hand-made histories: it must flag each kind of anomaly, so
that a chaos run cannot pass by checking nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chaos.checker import check
from chaos.report import criteria


def op(client: str, n: int, seq: int | None, outcome: str = "ok", **kw: Any) -> dict[str, Any]:
    return {
        "client": client,
        "room": "r",
        "txn": f"{client}-t{n}",
        "text": f"{client}-{n}",
        "t_invoke": float(n),
        "outcome": outcome,
        "t_ack": float(n) + 0.1 if seq is not None else None,
        "seq": seq,
        "duplicate": False,
        "t_timeout": None,
        **kw,
    }


def row(o: dict[str, Any], seq: int) -> list[Any]:
    return [seq, o["client"], o["txn"], o["text"], None]


@pytest.fixture
def good() -> dict[str, Any]:
    ops = [op("alice", 0, 1), op("bob", 1, 2), op("alice", 2, 3), op("bob", 3, None, "ambiguous")]
    ops[3]["t_timeout"] = 8.0
    rows = [row(ops[0], 1), row(ops[1], 2), row(ops[2], 3), row(ops[3], 4)]
    return {
        "rooms": {"r": ["alice", "bob", "carol"]},
        "ops": ops,
        "receipts": [
            {
                "client": c,
                "room": "r",
                "seq": s,
                "sender": snd,
                "txn": t,
                "text": x,
                "error": None,
                "t": 10.0 + s,
                "live": True,
            }
            for c in ("alice", "bob", "carol")
            for s, snd, t, x, _e in rows
        ],
        "final": {c: {"r": copy.deepcopy(rows)} for c in ("alice", "bob", "carol")},
        "faults": [{"name": "kill-node", "start": 0.5, "end": 1.5}],
        "windows": {"quorum_loss": []},
    }


def test_a_clean_history_passes(good: dict[str, Any]) -> None:
    result = check(good)
    c = result["counts"]
    assert result["valid"], result
    assert (c["lost"], c["duplicated"], c["reordered"], c["unexpected"]) == (0, 0, 0, 0)
    assert c["ambiguous"] == 1 and c["ambiguous_recovered"] == 1  # found stored at seq 4
    assert result["latency"]["send_to_ack_s"]["n"] == 3
    assert result["recovery"][0]["first_s"] == pytest.approx(0.6)
    result["drain"] = {"converged": True}
    assert all(criteria(result, None).values())


def test_lost_acked_message(good: dict[str, Any]) -> None:
    good["final"]["carol"]["r"] = [r for r in good["final"]["carol"]["r"] if r[0] != 3]
    result = check(good)
    assert result["counts"]["lost"] >= 1 and not result["valid"]
    assert {x["kind"] for x in result["lost"]} == {"hole", "acked_missing"}
    assert result["lost"][0]["member"] == "carol"


def test_lost_at_the_tail(good: dict[str, Any]) -> None:
    # Missing the last acked message, no hole before it: still lost.
    good["final"]["bob"]["r"] = good["final"]["bob"]["r"][:2]
    good["ops"].pop()  # the ambiguous one, stored at 4
    for member in ("alice", "carol"):
        good["final"][member]["r"] = good["final"][member]["r"][:3]
    result = check(good)
    assert [x["kind"] for x in result["lost"]] == ["acked_missing"]


def test_duplicated_in_history(good: dict[str, Any]) -> None:
    dup = copy.deepcopy(good["final"]["alice"]["r"][0])
    dup[0] = 5
    for member in ("alice", "bob", "carol"):
        good["final"][member]["r"].append(dup)
    result = check(good)
    assert result["counts"]["duplicated"] == 3
    assert result["duplicated"][0]["seqs"] == [1, 5]


def test_shown_twice(good: dict[str, Any]) -> None:
    good["receipts"].append(dict(good["receipts"][0], t=99.0))
    result = check(good)
    assert [x["kind"] for x in result["duplicated"]] == ["shown_twice"]


def test_members_disagree_on_order(good: dict[str, Any]) -> None:
    rows = good["final"]["bob"]["r"]
    rows[0][0], rows[1][0] = 2, 1  # bob has seq 1 and 2 swapped
    rows.sort()
    result = check(good)
    kinds = {x["kind"] for x in result["reordered"]}
    assert "members_disagree" in kinds and "not_at_acked_seq" in kinds
    assert not result["valid"]


def test_sender_fifo(good: dict[str, Any]) -> None:
    # Everyone agrees, but alice's two messages are stored in the wrong order.
    a0, a2 = good["ops"][0], good["ops"][2]
    a0["seq"], a2["seq"] = 3, 1
    for member in ("alice", "bob", "carol"):
        rows = good["final"][member]["r"]
        rows[0], rows[2] = row(a2, 1), row(a0, 3)
    result = check(good)
    assert [x["kind"] for x in result["reordered"]] == ["sender_fifo"] * 3


def test_unexpected_message(good: dict[str, Any]) -> None:
    forged = [5, "mallory", "m-t0", "hello", None]
    good["final"]["carol"]["r"].append(forged)
    result = check(good)
    assert [x["kind"] for x in result["unexpected"]] == ["never_sent"]
    good["final"]["carol"]["r"][-1] = [5, "alice", "alice-t0", "altered", None]
    assert check(good)["counts"]["unexpected"] >= 1
    good["final"]["carol"]["r"][-1] = [5, "alice", "x", None, "failed to verify"]
    assert check(good)["unexpected"][0]["kind"] == "undecryptable"


def test_refused_but_stored(good: dict[str, Any]) -> None:
    good["ops"][3]["outcome"] = "fail"
    result = check(good)
    assert [x["kind"] for x in result["unexpected"]] == ["refused_but_stored"] * 3


def test_false_ack_during_quorum_loss(good: dict[str, Any]) -> None:
    good["windows"]["quorum_loss"] = [[0.0, 5.0]]
    result = check(good)
    # seq 2 acked at 1.1 and seq 3 at 2.1, both after the grace second, and
    # nothing shows they were committed before quorum was lost
    assert result["counts"]["false_acks"] == 2 and not result["valid"]
    assert [x["seq"] for x in result["false_acks"]] == [2, 3]
    good["ops"][1]["duplicate"] = good["ops"][2]["duplicate"] = True  # resends: fine
    result = check(good)
    assert result["counts"]["false_acks"] == 0 and result["counts"]["acks_in_quorum_loss"] == 2


def test_late_ack_of_an_earlier_commit_is_not_false(good: dict[str, Any]) -> None:
    good["windows"]["quorum_loss"] = [[0.0, 5.0]]
    # carol received seq 2 while quorum was still lost: it (and seq 1) had
    # committed before; only its ack came late. Seq 3 was seen by others only
    # after quorum was back, yet acked before: a false ack.
    seen = next(r for r in good["receipts"] if r["client"] == "carol" and r["seq"] == 2)
    seen["t"] = 3.0
    result = check(good)
    assert [x["seq"] for x in result["false_acks"]] == [3]
    # The sender's own copy is no evidence (the engine reports it with the ack).
    own = next(r for r in good["receipts"] if r["client"] == "alice" and r["seq"] == 3)
    own["t"] = 2.1
    assert [x["seq"] for x in check(good)["false_acks"]] == [3]


def test_unrecovered_ambiguous(good: dict[str, Any]) -> None:
    for member in ("alice", "bob", "carol"):
        good["final"][member]["r"].pop()
    result = check(good)
    assert result["counts"]["ambiguous_recovered"] == 0
    assert result["valid"]  # an unacked send may be lost: not an anomaly


def test_delivery_latency_is_also_given_without_sends_made_while_quorum_was_lost(
    good: dict[str, Any],
) -> None:
    good["windows"]["quorum_loss"] = [[1.5, 2.5]]  # alice's send at t=2 waits for quorum
    latency = check(good)["latency"]
    everything = latency["send_to_deliver_s"]
    outside = latency["send_to_deliver_outside_quorum_loss_s"]
    # two members other than the sender see each of the 4 sends; alice's t=2 one is left out
    assert everything["n"] == 8 and outside["n"] == 6
    assert outside["max"] <= everything["max"]
