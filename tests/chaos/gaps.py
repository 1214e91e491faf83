"""Stalls as each client saw them: the longest time a client went without an
ack, what fault came before it, and, per fault, how long until every client
that was sending had an ack again (its failover time in this run).

Each workload client sends one message at a time, so a client's acks come
every fraction of a second while all is well and a gap between two of its
acks is a stall that client lived through. Only gaps inside the workload
(from its start until it stopped, before the final drain) count.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

# A client "was sending" at a fault's start if it had an ack this long before.
ACTIVE_S = 5.0
# The faults named for a gap: those that were on while it lasted, or ended
# this long before it began (a stall after a heal belongs to the heal).
BEFORE_S = 15.0


def _acks(ops: list[dict[str, Any]], end: float) -> dict[str, list[float]]:
    by_client: dict[str, list[float]] = defaultdict(list)
    for op in ops:
        t = op.get("t_ack")
        if t is not None and t <= end:
            by_client[op["client"]].append(t)
    for times in by_client.values():
        times.sort()
    return by_client


def _faults_near(faults: list[dict[str, Any]], a: float, b: float) -> list[str]:
    names = []
    for f in faults:
        start, end = f["start"], f.get("end") or f["start"]
        if start <= b and end >= a - BEFORE_S:
            where = f" {f['target']}" if f.get("target") else ""
            names.append(f"{f['name']}{where} {start:.1f}-{end:.1f}")
    return names


def _node_at(status: list[dict[str, Any]], client: str, t: float) -> str | None:
    """The endpoint `client` was last live on at time `t`."""
    where = None
    for s in status:
        if s["client"] == client and s["t"] <= t and s["state"] == "live":
            where = s.get("endpoint")
    return where


def client_gaps(history: dict[str, Any]) -> dict[str, Any]:
    """Per client its longest gap between two acks, with the faults near it;
    the longest of them all; and per fault its failover time in this run."""
    ops: list[dict[str, Any]] = history["ops"]
    faults = [f for f in history.get("faults", []) if not f.get("error")]
    status: list[dict[str, Any]] = history.get("status", [])
    window = (history.get("windows", {}).get("workload") or [[0.0, float("inf")]])[0]
    end = window[1] if window[1] > window[0] else float("inf")
    acks = _acks(ops, end)

    per_client: dict[str, dict[str, Any]] = {}
    for client, times in sorted(acks.items()):
        best = max(itertools.pairwise(times), key=lambda p: p[1] - p[0], default=None)
        if best is None:
            continue
        a, b = best
        per_client[client] = {
            "gap_s": round(b - a, 3),
            "from": round(a, 3),
            "to": round(b, 3),
            "on": _node_at(status, client, a),
            "faults": _faults_near(faults, a, b),
        }
    worst = max(per_client.items(), key=lambda kv: kv[1]["gap_s"], default=None)

    per_fault = []
    for f in faults:
        start, stop = f["start"], f.get("end") or f["start"]
        if start > end:
            continue
        active = [c for c, ts in acks.items() if any(start - ACTIVE_S <= t < start for t in ts)]
        again = [next((t for t in acks[c] if t >= start), None) for c in active]
        known = [t for t in again if t is not None]
        # the longest gap of any client that overlaps the fault
        overlap = [
            (b - a, c)
            for c, ts in acks.items()
            for a, b in itertools.pairwise(ts)
            if a <= stop and b >= start
        ]
        gap, who = max(overlap, default=(0.0, None))
        per_fault.append(
            {
                "name": f["name"],
                "target": f.get("target"),
                "start": round(start, 3),
                "end": round(stop, 3),
                "failover_s": round(max(known) - start, 3)
                if known and len(known) == len(again)
                else None,
                "client_gap_s": round(gap, 3),
                "client": who,
            }
        )
    return {
        "longest": {"client": worst[0], **worst[1]} if worst else None,
        "per_client": per_client,
        "per_fault": per_fault,
    }


def summary_lines(gaps: dict[str, Any]) -> list[str]:
    lines = ["", "longest ack gap per client (faults on during it or ended <= 15 s before):"]
    for client, g in gaps["per_client"].items():
        near = "; ".join(g["faults"]) or "no fault"
        lines.append(
            f"  {client} {g['gap_s']:7.2f} s  {g['from']:7.1f}-{g['to']:7.1f}"
            f" on {g['on']}  [{near}]"
        )
    worst = gaps.get("longest")
    if worst:
        lines.append(f"longest ack gap of any client: {worst['gap_s']} s ({worst['client']})")
    lines += [
        "",
        "per fault: failover = from its start until every client sending then had an ack "
        "again; client gap = the longest gap of one client overlapping it:",
    ]
    for f in gaps["per_fault"]:
        target = f" {f['target']}" if f.get("target") else ""
        lines.append(
            f"  {f['start']:7.1f}-{f['end']:7.1f} s  {f['name'] + target:32} "
            f"failover {f['failover_s']} s  client gap {f['client_gap_s']} s ({f['client']})"
        )
    return lines
