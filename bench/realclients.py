"""The real-client workloads: every room member a real client engine
(`bench.engines`, end-to-end encryption on) in several processes.

* a 10-member room, 5 senders at full rate (each keeps `--real-backlog`
  messages queued and unacknowledged);
* a 100-member room, 2 senders at 25 messages/s each (50 messages/s);
* one client alone, in a room of its own: it queues `--solo-count` messages
  at once and waits for every ack (its acked sends/s, against its bare seal
  rate).

It must never seal, send or receive around the engine: the figures are a
user's client's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import engines
from bench.common import Window, summary_ms
from bench.harness import ServerProcess, Users
from bench.limits import SPAWN

SOLO_ROOM = "rcsolo"
ROOMS = {
    "rc10": [f"rc10m{i}" for i in range(10)],
    "rc100": [f"rc100m{i}" for i in range(100)],
}


class Engines:
    """Processes of real client engines, driven over pipes."""

    def __init__(self, root: Path, users: Users, names: list[str], n: int, connect: str) -> None:
        self.where: dict[str, int] = {}
        specs: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        for i, name in enumerate(names):
            specs[i % n].append(users.spec(name))
            self.where[name] = i % n
        self.pipes = []
        self.procs = []
        for i, clients in enumerate(specs):
            parent, child = SPAWN.Pipe()
            spec = {"clients": clients, "home": str(root / f"engines{i}"), "connect": connect}
            p = SPAWN.Process(target=engines.main, args=(spec, child), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    @property
    def pids(self) -> dict[str, int]:
        return {f"clients{i}": p.pid for i, p in enumerate(self.procs) if p.pid is not None}

    def ask(self, cmd: str, arg: Any = None, only: int | None = None) -> list[Any]:
        pipes = self.pipes if only is None else [self.pipes[only]]
        for pipe in pipes:
            pipe.send((cmd, arg))
        out = []
        for pipe in pipes:
            status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"client process failed at {cmd}: {value}")
            out.append(value)
        return out

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("quit", None))
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def analyse(results: list[dict[str, Any]], members: int) -> dict[str, Any]:
    """Send→ack and send→deliver figures from the processes' timings (by txn)."""
    sent: dict[str, int] = {}
    order_violations = 0
    ack_lat: list[int] = []
    last_ack = 0
    for r in results:
        for user, txns in r["sent"].items():
            sent.update(txns)
            acks = r["acks"].get(user, {})
            seqs = [acks[t][1] for t in txns if t in acks]  # in the order queued
            order_violations += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
            for txn, t0 in txns.items():
                if txn in acks:
                    ack_lat.append(acks[txn][0] - t0)
                    last_ack = max(last_ack, acks[txn][0])
    deliver: list[int] = []
    last_shown = 0
    for r in results:
        for txn, t in r["shown"]:
            if txn in sent:
                deliver.append(t - sent[txn])
                last_shown = max(last_shown, t)
    failed = [f for r in results for f in r.get("failed", [])]
    first = min(sent.values(), default=0)
    out: dict[str, Any] = {
        "sent": len(sent),
        "acked": len(ack_lat),
        "delivered": len(deliver),
        "deliveries_expected": len(sent) * (members - 1),
        "order_violations": order_violations,
        "failed": len(failed),
        "unacked_at_end": sum(r.get("unacked_at_end", 0) for r in results),
        "reconnects": sum(r.get("reconnects", 0) for r in results),
        "failures": sorted(set(failed))[:5],
        "send_ack_ms": summary_ms(ack_lat),
        "send_deliver_ms": summary_ms(deliver),
    }
    if last_ack > first:
        out["acked_per_s"] = round(len(ack_lat) / ((last_ack - first) / 1e9), 1)
    if last_shown > first:
        out["delivered_per_s"] = round(len(deliver) / ((last_shown - first) / 1e9), 1)
    return out


def _run(eng: Engines, server: ServerProcess, cfg: dict[str, Any], members: int) -> dict[str, Any]:
    pids = {"server0": server.proc.pid if server.proc else 0, **eng.pids}
    win = Window(pids)
    results = eng.ask("run", cfg)
    usage = win.close()
    out = analyse(results, members)
    out["processes"] = usage
    out["server_cpu_pct"] = [usage["server0"]["cpu_pct"]]
    out["server_peak_rss_mb"] = [usage["server0"]["rss_peak_mb"]]
    out["client_cpu_pct"] = [usage[k]["cpu_pct"] for k in eng.pids]
    out["client_runq_wait_pct"] = [usage[k]["runq_wait_pct"] for k in eng.pids]
    out["bottleneck"] = _bottleneck(usage)
    return out


def _bottleneck(usage: dict[str, Any]) -> str:
    """Who limited the run: a process's demand is the CPU it used plus the
    time its main thread waited for one (2 cores for everything)."""
    procs = {k: v for k, v in usage.items() if isinstance(v, dict)}
    used = sum(v["cpu_pct"] for v in procs.values())
    demand = used + sum(v["runq_wait_pct"] for v in procs.values())
    top = max(procs, key=lambda k: procs[k]["cpu_pct"])
    if procs[top]["cpu_pct"] >= 85:
        return f"{top} CPU ({procs[top]['cpu_pct']:.0f}% of a core)"
    machine = float(usage.get("machine_busy_pct", 0))
    if machine >= 90:
        return f"the machine's CPUs ({machine:.0f}% busy; ran {used:.0f}%, wanted {demand:.0f}%)"
    if demand >= 170:  # of 200 on two cores
        return f"starved of CPU (ran {used:.0f}%, wanted {demand:.0f}% of 200)"
    return f"neither CPU-bound (ran {used:.0f}%, wanted {demand:.0f}% of 200)"


def real_clients(
    root: Path, args: argparse.Namespace, new_server: Callable[[Path], ServerProcess]
) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    users = Users()
    names = [u for members in ROOMS.values() for u in members]
    server = new_server(root / "node").start()
    out: dict[str, Any] = {"processes": args.real_procs}
    eng: Engines | None = None
    try:
        eng = Engines(root, users, names, args.real_procs, server.connect)
        out["engines"] = sum(eng.ask("start"))
        for room, members in ROOMS.items():
            creator = eng.where[members[0]]
            eng.ask(
                "create", {"room": room, "creator": members[0], "members": members[1:]}, creator
            )
            eng.ask("joined", {"room": room, "members": members})
        print("  real clients: 10-member room, 5 senders at full rate ...", flush=True)
        out["room10"] = _run(
            eng,
            server,
            {
                "room": "rc10",
                "senders": ROOMS["rc10"][:5],
                "seconds": args.duration,
                "backlog": args.real_backlog,
            },
            10,
        )
        print("  real clients: 100-member room at 50 msgs/s ...", flush=True)
        out["room100"] = _run(
            eng,
            server,
            {"room": "rc100", "senders": ROOMS["rc100"][:2], "seconds": args.duration, "rate": 25},
            100,
        )
        print(f"  real clients: one client queues {args.solo_count} messages ...", flush=True)
        # In a room of its own: the other members' clients would open its
        # messages on their own machines, not on the two cores it runs on.
        sender = ROOMS["rc10"][0]
        where = eng.where[sender]
        eng.ask("create", {"room": SOLO_ROOM, "creator": sender, "members": []}, where)
        eng.ask("joined", {"room": SOLO_ROOM, "members": [sender]}, where)
        out["solo"] = eng.ask(
            "solo", {"room": SOLO_ROOM, "sender": sender, "count": args.solo_count}, where
        )[0]
    finally:
        if eng is not None:
            eng.close()
        server.stop()
    return out
