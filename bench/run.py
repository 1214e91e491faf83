"""`make bench` / `python -m bench`: every workload next to its bare limit.

Prints a table and writes ``results/bench-<timestamp>.json``. See
docs/performance.md for what each row means and how to read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from bench import limits
from bench.common import (
    BYTES_UNLIMITED,
    LATENCY_INTERVAL,
    RATE_UNLIMITED,
    TEXT,
    Window,
    msg_id,
    proc_cpu_seconds,
    proc_mem,
    raise_fd_limit,
    sample_envelope,
    txn_of,
)
from bench.harness import ROOT, ServerProcess, Users, Workers, analyse, create_rooms, scrape
from bench.realclients import real_clients
from bench.report import ratios, table
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.protocol import encode

SERVER_ARGS = (
    "--rate-conn",
    RATE_UNLIMITED,
    "--rate-user",
    RATE_UNLIMITED,
    "--rate-user-bytes",
    BYTES_UNLIMITED,
    "--rate-epochs",
    RATE_UNLIMITED,
)
SWITCH_INTERVAL: float | None = None  # --switch-interval: an experiment, see docs


def new_server(data: Path, extra: tuple[str, ...] = ()) -> ServerProcess:
    """A `curvechat serve` process (optionally with another GIL switch interval)."""
    program: tuple[str, ...] = ("-m", "curvechat", "serve")
    if SWITCH_INTERVAL is not None:
        program = (
            "-c",
            f"import sys; sys.setswitchinterval({SWITCH_INTERVAL}); "
            "from curvechat.cli.main import main; sys.exit(main())",
            "serve",
        )
    return ServerProcess(data, extra_args=(*SERVER_ARGS, *extra), program=program)


class Profiler:
    """py-spy on a server process for one workload, when asked (--profile)."""

    def __init__(self, out: Path | None, pid: int, name: str, seconds: float) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if out is None or not Path(spy).exists():
            return
        out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(pid),
                "-d",
                str(int(seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out / f"{name}.collapsed.txt"),
                "--nonblocking",
                # Idle samples too, per thread: where the time waits, not
                # only where the CPU goes (profile_summary splits them).
                "--idle",
                "--threads",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(10)


def _rate(args: argparse.Namespace) -> dict[str, Any]:
    """A paced run: one message per sender every LATENCY_INTERVAL."""
    return {"mode": "rate", "interval": LATENCY_INTERVAL, "duration": args.duration}


def _window(args: argparse.Namespace, window: int) -> dict[str, Any]:
    """A windowed run: `window` sends in flight per sender."""
    return {"mode": "window", "window": window, "duration": args.duration}


def _latency_count(duration: float) -> int:
    """Messages a paced sender needs for a latency run of `duration` s (with a margin)."""
    return int(duration / LATENCY_INTERVAL) + 50


def _idle_window(args: argparse.Namespace) -> float:
    """Seconds of the latency run with the idle clients: a whole period of
    their app-level pings (every connection pings once), unless given."""
    if args.idle_window is not None:
        return float(args.idle_window)
    return max(args.duration, args.ping_interval)


def _pid(server: ServerProcess) -> int:
    return server.proc.pid if server.proc else 0


def _prepare(
    workers: Workers, users: Users, rooms: dict[str, list[str]], counts: dict[str, int]
) -> list[Any]:
    """Each sender in `counts` fetches its room's key and seals that many messages."""
    room_of = {u: r for r, members in rooms.items() for u in members}
    prep: list[list[dict[str, Any]]] = [[] for _ in workers.pipes]
    for u, n in counts.items():
        w, c = workers.where[u]
        room = room_of[u]
        prep[w].append(
            {
                "client": c,
                "room": room,
                "count": n,
                "creator_pub": users.get(rooms[room][0]).sign_pub,
            }
        )
    workers.send([("prepare", p) for p in prep])
    return workers.collect()


def _senders(workers: Workers, counts: dict[str, int]) -> list[dict[str, int]]:
    per: list[dict[str, int]] = [{} for _ in workers.pipes]
    for user, n in counts.items():
        w, c = workers.where[user]
        per[w][str(c)] = n
    return per


def workload(
    workers: Workers,
    servers: list[ServerProcess],
    cfg: dict[str, Any],
    counts: dict[str, int],
    *,
    profile: Path | None = None,
    name: str = "",
    extra_pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One timed run: every worker receives, the named senders send."""
    per = _senders(workers, counts)
    pids = {f"server{i}": s.proc.pid for i, s in enumerate(servers) if s.proc}
    pids.update(extra_pids or {})
    before = [scrape(s) for s in servers]
    win = Window(pids)
    prof = [
        Profiler(profile, s.proc.pid, f"{name}-server{i}", cfg.get("duration", 5))
        for i, s in enumerate(servers)
        if s.proc
    ]
    workers.send([("run", {**cfg, "senders": p}) for p in per])
    results = workers.collect()
    usage = win.close()
    for p in prof:
        p.wait()
    after = [scrape(s) for s in servers]
    out = analyse(results)
    out["processes"] = usage
    out["server_cpu_pct"] = [usage[k]["cpu_pct"] for k in pids if k.startswith("server")]
    out["server_peak_rss_mb"] = [usage[k]["rss_peak_mb"] for k in pids if k.startswith("server")]
    out["pushes_dropped"] = sum(
        a.get("curvechat_pushes_dropped_total", 0) - b.get("curvechat_pushes_dropped_total", 0)
        for a, b in zip(after, before, strict=True)
    )
    commits = sum(
        a.get("curvechat_store_commits_total", 0) - b.get("curvechat_store_commits_total", 0)
        for a, b in zip(after, before, strict=True)
    )
    if commits:
        out["messages_per_commit"] = round(out["acked"] / commits, 1)

    def mean_ms(name: str) -> float | None:
        pairs = list(zip(after, before, strict=True))
        total = sum(a.get(f"{name}_sum", 0) - b.get(f"{name}_sum", 0) for a, b in pairs)
        n = sum(a.get(f"{name}_count", 0) - b.get(f"{name}_count", 0) for a, b in pairs)
        return round(1000 * total / n, 3) if n else None

    # as the node itself saw them: request arrival -> ack sent, and one commit
    out["node_send_ack_mean_ms"] = mean_ms("curvechat_send_ack_seconds")
    out["node_commit_mean_ms"] = mean_ms("curvechat_store_commit_seconds")
    out["bottleneck"] = bottleneck(out)
    return out


def bottleneck(out: dict[str, Any]) -> str:
    """Who limited this run, as far as CPU figures can say (2 cores in all).

    A process's CPU demand is the time it ran plus the time its main thread
    was runnable but waiting for a CPU (other processes had them)."""
    procs = out.get("processes", {})

    def demand(name: str) -> float:
        p = procs.get(name, {})
        return float(p.get("cpu_pct", 0)) + float(p.get("runq_wait_pct", 0))

    servers = [k for k in procs if k.startswith("server")]
    server = max((procs[k]["cpu_pct"] for k in servers), default=0)
    server_demand = max((demand(k) for k in servers), default=0)
    loadgen = max(out["loadgen_cpu_pct"] or [0])
    if loadgen >= 85:
        return f"load generator (a worker at {loadgen:.0f}% of a core)"
    if server >= 85:
        return f"server CPU ({server:.0f}% of a core)"
    machine = float(procs.get("machine_busy_pct", 0))
    if machine >= 90:
        return f"the machine's CPUs ({machine:.0f}% busy, all processes)"
    if server_demand >= 85:
        wait = server_demand - server
        return f"server starved of CPU (ran {server:.0f}%, waited {wait:.0f}% for a core)"
    return f"neither CPU-bound (fsync / etcd / pacing; machine {machine:.0f}% busy)"


# --- single node ------------------------------------------------------------------
def single_node(root: Path, args: argparse.Namespace, profile: Path | None) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    users = Users()
    stalled = "stalled"
    rooms: dict[str, list[str]] = {"lat": [f"lat{i}" for i in range(10)]}
    for r in range(args.tp_rooms):
        rooms[f"tp{r}"] = [f"tp{r}m{i}" for i in range(9)] + [stalled]
    rooms["fan"] = [f"fan{i}" for i in range(99)] + [stalled]
    names = list(dict.fromkeys(u for members in rooms.values() for u in members))
    nworkers = 2
    specs: list[list[dict[str, Any]]] = [[] for _ in range(nworkers)]
    for i, name in enumerate(names):
        specs[i % nworkers].append(users.spec(name, stalled=name == stalled))
    server = new_server(root / "node").start()
    out: dict[str, Any] = {}
    workers = Workers(specs, [server])
    idle_workers: Workers | None = None
    per = args.idle // args.idle_workers if args.idle > 0 else 0
    idle_specs = [
        [users.spec(f"idle{w}x{i}") for i in range(per)] for w in range(args.idle_workers)
    ]
    try:
        out["connect"] = workers.all("connect")
        if per:
            out["idle_registration"] = _register(idle_specs, server, args)
        asyncio.run(create_rooms(root, [server], users, rooms))
        lat_n = _latency_count(args.duration)
        idle_s = _idle_window(args)
        tp_counts = {f"tp{r}m{k}": args.tp_count for r in range(args.tp_rooms) for k in range(2)}
        fan_counts = dict.fromkeys(("fan0", "fan1"), args.fan_count)
        # lat0 sends in two latency runs: without and with the idle clients
        counts = {"lat0": lat_n + _latency_count(idle_s), **tp_counts, **fan_counts}
        out["prepare"] = _prepare(workers, users, rooms, counts)
        pid = _pid(server)
        out["rss_after_setup_mb"] = round(proc_mem(pid)["VmRSS"] / 2**20, 1)

        def run(name: str, cfg: dict[str, Any], senders: dict[str, int], **kw: Any) -> Any:
            return workload(workers, [server], cfg, senders, profile=profile, name=name, **kw)

        print("  latency (10-member room, one message / 10 ms) ...", flush=True)
        out["latency"] = run("latency", _rate(args), {"lat0": lat_n})
        print("  throughput (10-member rooms, windowed senders) ...", flush=True)
        out["throughput"] = run("throughput", _window(args, args.window), tp_counts)
        print("  fan-out (100-member room) ...", flush=True)
        out["fanout"] = run("fanout", _window(args, args.fan_window), fan_counts)

        out["server_hwm_mb"] = round(proc_mem(pid)["VmHWM"] / 2**20, 1)
        if args.idle <= 0:
            return out
        print(f"  idle: connecting {args.idle} clients ...", flush=True)
        rss0 = proc_mem(pid)["VmRSS"]
        t0 = time.monotonic()
        idle_workers = Workers(idle_specs, [server], nice=19)
        idle_connect = idle_workers.all("connect", (args.connect_batch, args.idle_budget))
        idle_n = sum(r["connected"] for r in idle_connect)
        connect_s = time.monotonic() - t0
        idle_workers.send([("idle", {"ping_interval": args.ping_interval})] * args.idle_workers)
        time.sleep(max(3.0, min(args.ping_interval * 1.5, 10.0)))  # heartbeats in steady state
        rss1 = proc_mem(pid)["VmRSS"]
        print("  latency again, with the idle clients connected ...", flush=True)
        lat2 = run(
            "latency-idle",
            {**_rate(args), "duration": idle_s},
            {"lat0": _latency_count(idle_s)},
            extra_pids={f"idle{i}": p for i, p in enumerate(idle_workers.pids)},
        )
        rss2 = proc_mem(pid)["VmRSS"]
        idle_workers.stop_runs()
        idle_runs = idle_workers.collect()
        out["idle"] = {
            "clients": idle_n,
            "clients_asked": per * args.idle_workers,
            "connect_s": round(connect_s, 1),
            "connect": idle_connect,
            "ping_interval_s": args.ping_interval,
            "window_s": idle_s,
            "pongs": sum(r["pongs"] for r in idle_runs),
            "worker_cpu_pct": [round(r["cpu_pct"], 1) for r in idle_runs],
            "rss_before_mb": round(rss0 / 2**20, 1),
            "rss_connected_mb": round(rss1 / 2**20, 1),
            "rss_after_latency_mb": round(rss2 / 2**20, 1),
            "bytes_per_connection": round((rss1 - rss0) / max(idle_n, 1)),
            "latency": lat2,
        }
        out["server_hwm_mb"] = round(proc_mem(pid)["VmHWM"] / 2**20, 1)
    finally:
        if idle_workers is not None:
            idle_workers.close()
        workers.close()
        server.stop()
    return out


def _register(
    specs: list[list[dict[str, Any]]], server: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Register the idle clients' users, before the workloads (and the
    idle phase's memory baseline): a connection that is no user's is shut
    down 15 s after it was accepted (`server/silent.py`), so idle clients
    that did not sign in as users would reconnect again and again. Their
    connections close once registered; the idle phase signs them in."""
    print(f"  registering {sum(map(len, specs))} idle users ...", flush=True)
    t0 = time.monotonic()
    reg = Workers(specs, [server], nice=19)
    try:
        done = reg.all("connect", (args.connect_batch, args.idle_budget))
    finally:
        reg.close()
    return {
        "registered": sum(r["connected"] for r in done),
        "seconds": round(time.monotonic() - t0, 1),
    }


# --- catch-up -------------------------------------------------------------------
def _seal_chunk(seeds: tuple[str, bytes, bytes], room: str, key: bytes, start: int, n: int):
    ident = Identity.from_secrets(*seeds)
    now = int(time.time() * 1000)
    return [
        encode(
            seal_message(
                ident,
                room=room,
                epoch=0,
                key=key,
                txn=txn_of(start + i),
                plaintext=Plaintext(text=TEXT, ts=now),
            )
        )
        for i in range(n)
    ]


def _catch_up_client(seeds: tuple[str, bytes, bytes], home: str, connect: str, pipe) -> None:
    async def go() -> dict[str, Any]:
        from curvechat.client import events as ev
        from curvechat.client.cache import Cache, cache_key
        from curvechat.client.engine import ChatClient
        from curvechat.protocol.connect import parse_connect

        ident = Identity.from_secrets(*seeds)
        cache = Cache(Path(home) / "cache.db", cache_key(ident.sign_seed))
        got = 0
        bad = 0

        def on_event(e: Any) -> None:
            nonlocal got, bad
            if isinstance(e, ev.MessageReceived):
                got += 1
                if e.message.error is not None:
                    bad += 1

        client = ChatClient(
            ident, cache, parse_connect(connect), on_event=on_event, request_timeout=60.0
        )
        cpu0 = os.times()
        t0 = time.monotonic()
        await client.start()
        ok = await client.wait_ready(600)
        elapsed = time.monotonic() - t0
        cpu1 = os.times()
        await client.close()
        cache.close()
        cpu = cpu1.user - cpu0.user + cpu1.system - cpu0.system
        return {
            "ready": ok,
            "seconds": elapsed,
            "messages": got,
            "errors": bad,
            "client_cpu_pct": round(100 * cpu / elapsed, 1),
        }

    pipe.send(asyncio.run(go()))


def catch_up(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bench.harness import ClientFactory
    from curvechat.store import NewMessage
    from curvechat.store.sqlite import SQLiteStore

    root.mkdir(parents=True, exist_ok=True)
    users = Users()
    writer, reader = users.get("cuwriter"), users.get("cureader")
    server = new_server(root / "node").start()
    out: dict[str, Any] = {"messages": args.catchup}
    try:

        async def setup() -> bytes:
            factory = ClientFactory(root / "homes")
            r, _ = await factory.make("cureader", server.connect, identity=reader)
            await factory.close(r)
            w, _ = await factory.make("cuwriter", server.connect, identity=writer)
            await w.create_room("catchup", ["cureader"])
            key = w.cache.epoch_keys("catchup")[0][1]
            await factory.close_all()
            return key

        key = asyncio.run(setup())
        t0 = time.monotonic()
        seeds = ("cuwriter", writer.sign_seed, writer.transport_secret)
        chunk = 5000
        jobs = [
            (seeds, "catchup", key, msg_id(9, 0, s), min(chunk, args.catchup - s))
            for s in range(0, args.catchup, chunk)
        ]
        with limits.SPAWN.Pool(2) as pool:
            sealed = pool.starmap(_seal_chunk, jobs)
        out["seal_s"] = round(time.monotonic() - t0, 1)
        server.stop()
        t0 = time.monotonic()

        async def fill() -> None:
            store = SQLiteStore(server.data / "curvechat.db")
            await store.open()
            try:
                for (_, _, _, start, _), envs in zip(jobs, sealed, strict=True):
                    await store.append_messages(
                        [
                            NewMessage("catchup", "cuwriter", txn_of(start + i), e)
                            for i, e in enumerate(envs)
                        ]
                    )
            finally:
                await store.close()

        asyncio.run(fill())
        out["fill_s"] = round(time.monotonic() - t0, 1)
        server.start()
        parent, child = limits.SPAWN.Pipe()
        proc = limits.SPAWN.Process(
            target=_catch_up_client,
            args=(
                ("cureader", reader.sign_seed, reader.transport_secret),
                str(root / "homes" / "cureader"),
                server.connect,
                child,
            ),
        )
        pid = _pid(server)
        cpu0 = proc_cpu_seconds(pid)
        proc.start()
        res = parent.recv()
        proc.join(30)
        cpu = proc_cpu_seconds(pid) - cpu0
        out.update(res)
        out["per_s"] = round(res["messages"] / res["seconds"], 1) if res["seconds"] else 0
        out["server_cpu_pct"] = round(100 * cpu / res["seconds"], 1)
    finally:
        server.stop()
    return out


# --- cluster ----------------------------------------------------------------------
def cluster(root: Path, args: argparse.Namespace, profile: Path | None) -> dict[str, Any]:
    from support.etcd import etcd_cluster

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    with etcd_cluster(root / "etcd", size=3) as etcd:
        env_size = len(encode(sample_envelope()))
        out["bare_etcd"] = asyncio.run(limits.etcd_limits(etcd.endpoints.split(","), env_size + 40))
        nodes = [new_server(root / f"node{i}", ("--store", etcd.url)) for i in range(2)]
        for n in nodes:
            n.start()
        users = Users()
        rooms: dict[str, list[str]] = {"lat": [f"lat{i}" for i in range(10)]}
        for r in range(args.tp_rooms):
            rooms[f"tp{r}"] = [f"tp{r}m{i}" for i in range(10)]
        names = list(dict.fromkeys(u for members in rooms.values() for u in members))
        specs: list[list[dict[str, Any]]] = [[], []]
        for i, name in enumerate(names):
            # half the clients on each node; every room spans both nodes
            specs[i % 2].append(users.spec(name, node=i % 2))
        workers = Workers(specs, nodes)
        try:
            out["connect"] = workers.all("connect")
            asyncio.run(create_rooms(root, nodes, users, rooms))
            lat_n = _latency_count(args.duration)
            tp_counts = {
                f"tp{r}m{k}": args.tp_count for r in range(args.tp_rooms) for k in range(2)
            }
            out["prepare"] = _prepare(workers, users, rooms, {"lat0": lat_n, **tp_counts})
            etcd_pids = {m.name: m.proc.pid for m in etcd.members if m.proc}
            print("  cluster latency ...", flush=True)
            out["latency"] = workload(
                workers, nodes, _rate(args), {"lat0": lat_n}, extra_pids=etcd_pids
            )
            print("  cluster throughput ...", flush=True)
            before = [cluster_counters(n) for n in nodes]
            out["throughput"] = workload(
                workers,
                nodes,
                _window(args, args.window),
                tp_counts,
                profile=profile,
                name="cluster-throughput",
                extra_pids=etcd_pids,
            )
            # Room ownership (issue 17): sends forwarded to their room's owner,
            # fallbacks, and commits lost to another node's compare-and-swap.
            out["throughput"]["nodes"] = [
                {k: v - b.get(k, 0.0) for k, v in cluster_counters(n).items()}
                for n, b in zip(nodes, before, strict=True)
            ]
        finally:
            workers.close()
            for n in nodes:
                n.stop()
    return out


def cluster_counters(node: ServerProcess) -> dict[str, float]:
    """The node's forwarding and CAS-retry counters, by label."""
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            ("curvechat_cluster_forwarded_messages_total", "curvechat_cluster_cas_retries_total")
        ):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("curvechat_cluster_")] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "results"), help="where the JSON goes")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (node logs)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the servers (collapsed stacks, results/profile-*)",
    )
    ap.add_argument("--only", default="limits,single,catchup,real,cluster")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per timed workload")
    ap.add_argument(
        "--window",
        type=int,
        default=128,
        help="sends in flight per sender (the client engine's own window: 128)",
    )
    ap.add_argument("--tp-rooms", type=int, default=4)
    ap.add_argument("--tp-count", type=int, default=12_000, help="sealed messages per sender")
    ap.add_argument(
        "--fan-window", type=int, default=64, help="sends in flight of the 100-member room's sender"
    )
    ap.add_argument("--fan-count", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--idle-workers", type=int, default=4)
    ap.add_argument("--ping-interval", type=float, default=30.0)
    ap.add_argument(
        "--idle-window",
        type=float,
        help="seconds of the latency run with the idle clients (default: their ping "
        "interval, so that every connection pings once in it)",
    )
    ap.add_argument("--connect-batch", type=int, default=100, help="idle handshakes at a time")
    ap.add_argument(
        "--idle-budget", type=float, default=150.0, help="seconds to open idle connections"
    )
    ap.add_argument("--catchup", type=int, default=100_000)
    ap.add_argument("--real-procs", type=int, default=4, help="processes of real client engines")
    ap.add_argument(
        "--real-backlog",
        type=int,
        default=128,
        help="queued, unacked messages per full-rate sender",
    )
    ap.add_argument("--solo-count", type=int, default=6000, help="messages of the one-client run")
    ap.add_argument(
        "--plain-frames",
        action="store_true",
        help="load clients ask for one frame per ack and push (no `batch` frames)",
    )
    ap.add_argument(
        "--single-sends",
        action="store_true",
        help="windowed load clients send one `send` frame per message, not `sends`"
        " frames of every send they can (the client engine's way)",
    )
    ap.add_argument(
        "--switch-interval", type=float, help="run the servers with this sys.setswitchinterval"
    )
    args = ap.parse_args(argv)
    if args.quick:  # smaller sizes, unless given explicitly
        given = set(argv if argv is not None else sys.argv[1:])
        quick = {
            "--duration": 3.0,
            "--tp-count": 1500,
            "--fan-count": 600,
            "--idle": 1000,
            "--idle-window": 3.0,
            "--catchup": 5000,
            "--solo-count": 500,
        }
        for flag, value in quick.items():
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), value)
    only = set(args.only.split(","))
    global SWITCH_INTERVAL
    SWITCH_INTERVAL = args.switch_interval
    Workers.batch = not args.plain_frames
    Workers.sends = not args.single_sends
    raise_fd_limit()
    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = out_dir / f"profile-{stamp}" if args.profile else None
    root = Path(tempfile.mkdtemp(prefix="curvechat-bench-", dir=out_dir))
    report: dict[str, Any] = {
        "meta": {
            "started": stamp,
            "python": platform.python_version(),
            "libzmq": zmq.zmq_version(),
            "pyzmq": zmq.__version__,
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "args": vars(args),
        }
    }
    steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("limits", "bare limits ...", lambda: limits.run_all(root)),
        ("single", "single node ...", lambda: single_node(root / "single", args, profile)),
        (
            "catchup",
            f"catch-up of {args.catchup} messages ...",
            lambda: catch_up(root / "catchup", args),
        ),
        (
            "real",
            "real client engines ...",
            lambda: real_clients(root / "real", args, new_server),
        ),
        (
            "cluster",
            "cluster (3 etcd members, 2 chat nodes) ...",
            lambda: cluster(root / "cluster", args, profile),
        ),
    ]
    seconds: dict[str, float] = {}
    try:
        for key, label, step in steps:
            if key in only:
                print(label, flush=True)
                t0 = time.monotonic()
                report[key] = step()
                seconds[key] = round(time.monotonic() - t0, 1)
    except BaseException:
        print(f"failed; logs kept in {root}", file=sys.stderr)
        raise
    if args.keep:
        print(f"work folder kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    report["meta"]["seconds"] = seconds
    report["meta"]["total_seconds"] = round(time.time() - started, 1)
    report["meta"]["loadavg_end"] = os.getloadavg()
    report["ratios"] = ratios(report)
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(table(report))
    print(f"\nwritten: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0
