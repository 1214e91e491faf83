"""The checker: reads a recorded history (a plain dict, as saved in
report.json) and says what went wrong, Jepsen-style.

The history holds:

* ``rooms``: room -> its members (client names);
* ``ops``: every send as invoked, one dict each: client, room, txn, text,
  t_invoke, outcome (``ok`` acked in time, ``ambiguous`` timed out,
  ``fail`` refused, ``pending`` not yet known), t_ack and seq once an ack came
  (also for an ambiguous send acknowledged later), duplicate (the ack said the
  store had it already);
* ``receipts``: every message a client's engine reported (client, room, seq,
  sender, txn, text, error, t, live);
* ``final``: client -> room -> that client's cache after the final drain, as
  [seq, sender, txn, text, error] rows;
* ``windows``: fault windows the checker needs, e.g. ``quorum_loss``
  [[start, end], ...] (an ack then, of a message not committed before, is a
  false ack);
* ``faults``: [{name, start, end}] for the recovery times.

Times are seconds from the start of the run.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from typing import Any

EXAMPLES = 20
# Acks that arrive within this long after quorum was lost may be replies to
# requests committed just before; later ones cannot be.
QUORUM_GRACE_S = 1.0


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 4)

    return {
        "n": len(ordered),
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


def check(history: dict[str, Any]) -> dict[str, Any]:
    rooms: dict[str, list[str]] = history["rooms"]
    ops: list[dict[str, Any]] = history["ops"]
    final: dict[str, dict[str, list[list[Any]]]] = history["final"]
    receipts: list[dict[str, Any]] = history.get("receipts", [])

    by_id: dict[tuple[str, str, str], dict[str, Any]] = {}  # (room, sender, txn) -> op
    for op in ops:
        by_id[(op["room"], op["client"], op["txn"])] = op
    acked = [op for op in ops if op.get("seq") is not None]

    lost: list[dict[str, Any]] = []
    duplicated: list[dict[str, Any]] = []
    reordered: list[dict[str, Any]] = []
    unexpected: list[dict[str, Any]] = []

    # Per member and room: where each message is, and sanity of the sequence.
    where: dict[tuple[str, str], dict[tuple[str, str], list[int]]] = {}
    canonical: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)

    def scan(room: str, member: str, rows: list[list[Any]]) -> dict[tuple[str, str], list[int]]:
        """One member's final rows of one room: holes, order, duplicates,
        messages never sent, disagreement with the other members. Returns
        where each (sender, txn) is stored."""
        seen: dict[tuple[str, str], list[int]] = defaultdict(list)
        last = 0
        for seq, sender, txn, text, error in rows:
            if seq <= last:
                reordered.append(
                    {"kind": "seq_not_increasing", "room": room, "member": member, "seq": seq}
                )
            if seq != last + 1:
                for missing in range(last + 1, seq):
                    lost.append({"kind": "hole", "room": room, "member": member, "seq": missing})
            last = max(last, seq)
            seen[(sender, txn)].append(seq)
            op = by_id.get((room, sender, txn))
            if error is not None:
                unexpected.append(
                    {
                        "kind": "undecryptable",
                        "room": room,
                        "member": member,
                        "seq": seq,
                        "error": error,
                    }
                )
            elif op is None or op["text"] != text:
                unexpected.append(
                    {
                        "kind": "never_sent",
                        "room": room,
                        "member": member,
                        "seq": seq,
                        "sender": sender,
                        "txn": txn,
                        "text": text,
                    }
                )
            elif op["outcome"] == "fail":
                unexpected.append(
                    {
                        "kind": "refused_but_stored",
                        "room": room,
                        "member": member,
                        "seq": seq,
                        "txn": txn,
                    }
                )
            other = canonical[room].get(seq)
            if other is None:
                canonical[room][seq] = (sender, txn)
            elif other != (sender, txn):
                reordered.append(
                    {
                        "kind": "members_disagree",
                        "room": room,
                        "member": member,
                        "seq": seq,
                        "has": [sender, txn],
                        "other": list(other),
                    }
                )
        for (sender, txn), seqs in seen.items():
            if len(seqs) > 1:
                duplicated.append(
                    {
                        "kind": "stored_twice",
                        "room": room,
                        "member": member,
                        "sender": sender,
                        "txn": txn,
                        "seqs": seqs,
                    }
                )
        # Each sender's messages in the order it sent them (the outbox is FIFO).
        order: dict[str, list[float]] = defaultdict(list)
        for _seq, sender, txn, _text, _error in rows:
            op = by_id.get((room, sender, txn))
            if op is not None:
                order[sender].append(op["t_invoke"])
        for sender, times in order.items():
            for a, b in itertools.pairwise(times):
                if b < a:
                    reordered.append(
                        {
                            "kind": "sender_fifo",
                            "room": room,
                            "member": member,
                            "sender": sender,
                        }
                    )
                    break
        return seen

    for room, members in rooms.items():
        for member in members:
            where[(member, room)] = scan(room, member, final.get(member, {}).get(room, []))

    # Lost: an acknowledged send missing from a member's final history, or
    # stored at another seq than its ack said.
    for op in acked:
        for member in rooms[op["room"]]:
            seqs = where.get((member, op["room"]), {}).get((op["client"], op["txn"]))
            if not seqs:
                lost.append(
                    {
                        "kind": "acked_missing",
                        "room": op["room"],
                        "member": member,
                        "sender": op["client"],
                        "txn": op["txn"],
                        "seq": op["seq"],
                    }
                )
            elif op["seq"] not in seqs:
                reordered.append(
                    {
                        "kind": "not_at_acked_seq",
                        "room": op["room"],
                        "member": member,
                        "txn": op["txn"],
                        "acked": op["seq"],
                        "found": seqs,
                    }
                )

    # Clients never show a message twice: two reports of one message.
    shown: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for r in receipts:
        shown[(r["client"], r["room"], r["sender"], r["txn"])] += 1
    for (client, room, sender, txn), n in shown.items():
        if n > 1:
            duplicated.append(
                {
                    "kind": "shown_twice",
                    "client": client,
                    "room": room,
                    "sender": sender,
                    "txn": txn,
                    "times": n,
                }
            )
    for r in receipts:
        sent = by_id.get((r["room"], r["sender"], r["txn"]))
        if r.get("error") is None and (sent is None or sent["text"] != r["text"]):
            unexpected.append({"kind": "received_never_sent", **r})

    # Ambiguous sends: recovered once acknowledged later or found stored.
    ambiguous = [op for op in ops if op["outcome"] == "ambiguous"]
    stored_anywhere = {
        (room, sender, txn) for (_m, room), seen in where.items() for (sender, txn) in seen
    }
    recovered = [
        op
        for op in ambiguous
        if op.get("seq") is not None or (op["room"], op["client"], op["txn"]) in stored_anywhere
    ]

    # False acks: acknowledged while etcd had no quorum, for a message that
    # was not committed then. Nothing can commit without quorum, so a message
    # that another member received before quorum came back (or a later seq of
    # its room) was committed before it was lost, and only its ack came late.
    # An ack in the window of one that others saw only afterwards preceded
    # its commit: a false ack. (One never committed at all is "lost".)
    false_acks = []
    acks_in_window = 0
    for start, end in history.get("windows", {}).get("quorum_loss", []):
        committed_before: dict[str, int] = defaultdict(int)
        for r in receipts:
            if r["t"] < end and r["client"] != r["sender"]:
                committed_before[r["room"]] = max(committed_before[r["room"]], r["seq"])
        for op in acked:
            if op["t_ack"] is not None and op["t_ack"] < start:
                committed_before[op["room"]] = max(committed_before[op["room"]], op["seq"])
        for op in acked:
            t = op.get("t_ack")
            if t is not None and start + QUORUM_GRACE_S <= t <= end:
                acks_in_window += 1
                if not op.get("duplicate") and op["seq"] > committed_before[op["room"]]:
                    false_acks.append(
                        {"txn": op["txn"], "room": op["room"], "seq": op["seq"], "t_ack": t}
                    )

    # Latency: send -> ack, and send -> delivered to each other member.
    ack_lat = [
        op["t_ack"] - op["t_invoke"] for op in ops if op["outcome"] == "ok" and op.get("t_ack")
    ]
    first_seen: dict[tuple[str, str, str, str], float] = {}
    for r in receipts:
        key = (r["client"], r["room"], r["sender"], r["txn"])
        if r["client"] != r["sender"] and key not in first_seen:
            first_seen[key] = r["t"]
    deliver_lat = []
    # Sends made while etcd had no quorum wait for it whatever the nodes do:
    # the latency of the others is reported apart too.
    lost_quorum = history.get("windows", {}).get("quorum_loss", [])
    deliver_outside = []
    for (_client, room, sender, txn), t in first_seen.items():
        sent = by_id.get((room, sender, txn))
        if sent is not None:
            deliver_lat.append(t - sent["t_invoke"])
            if not any(a <= sent["t_invoke"] <= b for a, b in lost_quorum):
                deliver_outside.append(t - sent["t_invoke"])

    recovery = recovery_times(history, ops)
    counts = {
        "invoked": len(ops),
        "acked": len(acked),
        "ok": sum(op["outcome"] == "ok" for op in ops),
        "failed": sum(op["outcome"] == "fail" for op in ops),
        "ambiguous": len(ambiguous),
        "ambiguous_recovered": len(recovered),
        "pending": sum(op["outcome"] == "pending" for op in ops),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "reordered": len(reordered),
        "unexpected": len(unexpected),
        "false_acks": len(false_acks),
        "acks_in_quorum_loss": acks_in_window,
        "received": len(receipts),
    }
    return {
        "counts": counts,
        "valid": not (lost or duplicated or reordered or unexpected or false_acks),
        "lost": lost[:EXAMPLES],
        "duplicated": duplicated[:EXAMPLES],
        "reordered": reordered[:EXAMPLES],
        "unexpected": unexpected[:EXAMPLES],
        "false_acks": false_acks[:EXAMPLES],
        "latency": {
            "send_to_ack_s": quantiles(ack_lat),
            "send_to_deliver_s": quantiles(deliver_lat),
            "send_to_deliver_outside_quorum_loss_s": quantiles(deliver_outside),
        },
        "recovery": recovery,
    }


def recovery_times(history: dict[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each fault: how long after it ended until every client that sends
    had an ack again (all_s), the first one did (first_s), and the longest
    time the whole system went without any ack while it lasted (gap_s)."""
    acks = sorted(op["t_ack"] for op in ops if op.get("t_ack") is not None)
    by_client: dict[str, list[float]] = defaultdict(list)
    for op in ops:
        if op.get("t_ack") is not None:
            by_client[op["client"]].append(op["t_ack"])
    for times in by_client.values():
        times.sort()
    out = []
    for fault in history.get("faults", []):
        start, end = fault["start"], fault.get("end") or fault["start"]
        firsts = [next((t for t in times if t >= end), None) for times in by_client.values()]
        known = [t for t in firsts if t is not None]
        window = [t for t in acks if start <= t <= end]
        edges = sorted([start, *window, end])
        gap = max((b - a for a, b in itertools.pairwise(edges)), default=0.0)
        out.append(
            {
                "name": fault["name"],
                "start": round(start, 3),
                "end": round(end, 3),
                "first_s": round(min(known) - end, 3) if known else None,
                "all_s": round(max(known) - end, 3)
                if known and len(known) == len(firsts)
                else None,
                "gap_s": round(gap, 3),
            }
        )
    return out
