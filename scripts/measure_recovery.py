"""Measure how long curvechat takes to recover from the faults that
docs/reliability.md uses as repair times (MTTR as a client sees it).

Real `curvechat serve` processes and real etcd members on loopback ports
(the same helpers as the tests: tests/support), in-process engine clients
with the engine's DEFAULT connection settings (ping every 2 s, liveness 3
pings, connect timeout 3 s, back-off base 0.25 s / cap 10 s) unless --fast.

Scenarios (each repeated --reps times, fresh clients each time):

  single   one node on SQLite: kill -9, restart on the same data and port;
           a message queued right after the kill.
  failover two nodes on a 3-member etcd; the client's connect string names
           both, it is on A: kill -9 of A; a message queued right after.
  freeze   as failover, but A is frozen (SIGSTOP: a hung host or a network
           partition, no TCP reset): the client must notice by liveness.
  leader   one node on a 3-member etcd: kill -9 of the Raft leader; a send
           issued right after.
  quorum   one node on a 3-member etcd: 2 of 3 members killed for --outage
           seconds, then restarted; a message queued during the outage.
  cutoff   two chat nodes; B reaches etcd through one member only, which is
           killed (etcd keeps its quorum, A is fine); the client is on B with
           a connect string naming B and A, and a message is queued right
           after the kill. Since commit 7eb1a3e the client leaves a node
           after three store_unavailable refusals in a row: times to
           leaving B (`detect`), live and ready on A, and the ack. If the
           message is not acknowledged within --cut seconds the member is
           restarted and `ack_after_heal` is timed instead.
  cutoffsilent
           as cutoff, but the member is frozen (SIGSTOP) instead of killed:
           B's calls wait out their 5 s deadline instead of failing at once
           (a silent partition between B and etcd), so the client leaves
           after about 17 s: use --cut 45. The member is one of A's three
           too, so A also waits out a deadline on it now and then.
  leaderfreeze, followerfreeze
           one node on a 3-member etcd: the leader (or a follower) frozen
           with SIGSTOP (a hung etcd process on a live host, e.g. stuck in
           fsync: TCP still answers), a send issued right after; given up
           (recorded as 90 s, acked 0) if not acknowledged in 90 s (before
           commit 8b0a5b8 each took about 60 s; now a few seconds).

Times are from the fault (kill / SIGSTOP; for quorum, from the restart of
the members) to: `detect` = the client left `live`, `live` = the client has
a welcome again, `ready` = it has also re-synced, `ack` = the queued message
is acknowledged.

    .venv/bin/python scripts/measure_recovery.py             # the first five, 5 reps
    .venv/bin/python scripts/measure_recovery.py --only leaderfreeze,followerfreeze --reps 3
    .venv/bin/python scripts/measure_recovery.py --only cutoff,cutoffsilent --reps 3 --cut 45
    .venv/bin/python scripts/measure_recovery.py --only single,leader --reps 3
    .venv/bin/python scripts/measure_recovery.py --json results/recovery.json

Needs the Debian package etcd-server for everything but `single`. The test
etcd members run with --heartbeat-interval 50 --election-timeout 500 (the
tests' settings; etcd's defaults are 100 and 1000 ms), which shortens
leader elections: see docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from curvechat.client import events as ev  # noqa: E402
from curvechat.client.engine import ChatClient  # noqa: E402
from curvechat.client.errors import RequestTimeout  # noqa: E402
from curvechat.client.state import Backoff, ConnState  # noqa: E402
from curvechat.protocol import messages as m  # noqa: E402

from support.clients import FAST, ClientFactory  # noqa: E402
from support.etcd import EtcdCluster  # noqa: E402
from support.servers import ServerProcess  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "ping_interval": 2.0,
    "liveness": 3,
    "connect_timeout": 3.0,
    "request_timeout": 10.0,
    "backoff": Backoff(),
}


class Clock:
    """Times (perf_counter) of a client's status changes after a mark."""

    def __init__(self, client: ChatClient) -> None:
        self.t0 = 0.0
        self.left_live: float | None = None
        self.live: float | None = None
        self.ready: float | None = None
        self.drops = 0
        client.subscribe(self._on_event)

    def mark(self) -> None:
        self.t0 = time.perf_counter()
        self.left_live = self.live = self.ready = None
        self.drops = 0

    def _on_event(self, event: ev.Event) -> None:
        if self.t0 == 0.0:
            return
        now = time.perf_counter()
        if isinstance(event, ev.CaughtUp):
            # the engine is ready (synced) on a new connection
            if self.live is not None and self.ready is None:
                self.ready = now - self.t0
            return
        if not isinstance(event, ev.StatusChanged):
            return
        if event.status.state is ConnState.LIVE:
            if self.left_live is not None and self.live is None:
                self.live = now - self.t0
        elif self.left_live is None:
            self.left_live = now - self.t0
            self.drops += 1
        else:
            self.drops += 1


async def make(factory: ClientFactory, user: str, connect: str, fast: bool) -> ChatClient:
    client, _ = await factory.make(user, connect, **(FAST if fast else DEFAULTS))
    return client


async def alice_and_bob(
    factory: ClientFactory, alice_connect: str, bob_connect: str, fast: bool
) -> ChatClient:
    """alice and bob in room "r", where alice has sent one message; returns alice."""
    alice = await make(factory, "alice", alice_connect, fast)
    await make(factory, "bob", bob_connect, fast)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before")
    return alice


# --- scenarios ----------------------------------------------------------------------------


async def single(root: Path, fast: bool) -> dict[str, float]:
    server = await asyncio.to_thread(ServerProcess(root / "node").start)
    factory = ClientFactory(root / "homes")
    try:
        alice = await alice_and_bob(factory, server.connect, server.connect, fast)
        clock = Clock(alice)
        clock.mark()
        t0 = clock.t0
        await asyncio.to_thread(server.kill)
        txn = str(await alice.send("r", "after", wait=False))
        started = asyncio.create_task(asyncio.to_thread(server.start))
        ack_task = asyncio.create_task(alice.wait_ack(txn, 60))
        await started
        restart = time.perf_counter() - t0
        ack = await ack_task
        ack_s = time.perf_counter() - t0
        assert isinstance(ack, m.SendAck) and ack.seq == 2, ack
        assert clock.live is not None and clock.ready is not None
        return {"restart": restart, "live": clock.live, "ready": clock.ready, "ack": ack_s}
    finally:
        await factory.close_all()
        await asyncio.to_thread(server.stop)


def chat_node(root: Path, name: str, url: str) -> ServerProcess:
    return ServerProcess(root / name, extra_args=("--store", url))


async def failover(root: Path, fast: bool, etcd: EtcdCluster, *, freeze: bool) -> dict[str, float]:
    url = f"{etcd.url}/m-{root.name}"
    b = await asyncio.to_thread(chat_node(root, "b", url).start)
    a = await asyncio.to_thread(chat_node(root, "a", url).start)
    factory = ClientFactory(root / "homes")
    try:
        alice = await alice_and_bob(factory, f"{a.connect},{b.connect}", b.connect, fast)
        assert alice.status.endpoint == a.endpoint
        clock = Clock(alice)
        clock.mark()
        t0 = clock.t0
        if freeze:
            a.freeze()
        else:
            await asyncio.to_thread(a.kill)
        txn = str(await alice.send("r", "after", wait=False))
        ack = await alice.wait_ack(txn, 60)
        ack_s = time.perf_counter() - t0
        assert isinstance(ack, m.SendAck) and ack.seq == 2, ack
        assert alice.status.endpoint == b.endpoint
        assert clock.live is not None and clock.left_live is not None and clock.ready is not None
        return {"detect": clock.left_live, "live": clock.live, "ready": clock.ready, "ack": ack_s}
    finally:
        await factory.close_all()
        await asyncio.to_thread(a.kill)  # SIGKILL also ends a stopped process
        await asyncio.to_thread(b.stop)


GIVE_UP_S = 90.0  # a send not acknowledged by then is recorded as 90 s, acked 0


async def member(
    root: Path, fast: bool, etcd: EtcdCluster, *, role: str, freeze: bool
) -> dict[str, float]:
    """One etcd member (the leader or a follower) killed or frozen; the first
    ack of a send issued right after."""
    node = await asyncio.to_thread(chat_node(root, "a", f"{etcd.url}/l-{root.name}").start)
    factory = ClientFactory(root / "homes")
    victim = None
    try:
        alice = await alice_and_bob(factory, node.connect, node.connect, fast)
        lead = await asyncio.to_thread(etcd.leader)
        victim = lead if role == "leader" else next(x for x in etcd.members if x is not lead)
        clock = Clock(alice)
        clock.mark()
        t0 = clock.t0
        if freeze:
            victim.freeze()
        else:
            await asyncio.to_thread(victim.kill)
        txn = str(await alice.send("r", "after", wait=False))
        acked = 1.0
        try:
            ack = await alice.wait_ack(txn, GIVE_UP_S)
            assert isinstance(ack, m.SendAck) and ack.seq == 2, ack
            ack_s = time.perf_counter() - t0
        except RequestTimeout:
            acked, ack_s = 0.0, GIVE_UP_S
        return {"ack": ack_s, "acked": acked, "client_drops": float(clock.drops)}
    finally:
        await factory.close_all()
        await asyncio.to_thread(node.stop)
        if victim is not None:
            victim.restart()  # SIGKILL (also ends a stopped process), then start
            await asyncio.to_thread(etcd.wait_healthy)


async def quorum(root: Path, fast: bool, etcd: EtcdCluster, outage: float) -> dict[str, float]:
    node = await asyncio.to_thread(chat_node(root, "a", f"{etcd.url}/q-{root.name}").start)
    factory = ClientFactory(root / "homes")
    try:
        alice = await alice_and_bob(factory, node.connect, node.connect, fast)
        clock = Clock(alice)
        clock.mark()
        down = etcd.members[1:]
        for member in down:
            await asyncio.to_thread(member.kill)
        txn = str(await alice.send("r", "during", wait=False))
        ack_task = asyncio.ensure_future(alice.wait_ack(txn, 120))
        await asyncio.sleep(outage)
        false_ack = ack_task.done() and not ack_task.cancelled() and ack_task.exception() is None
        t_restore = time.perf_counter()
        for member in down:
            member.restart()
        await asyncio.to_thread(etcd.wait_healthy)
        healthy = time.perf_counter() - t_restore
        ack = await ack_task
        ack_s = time.perf_counter() - t_restore
        assert not false_ack, "acknowledged without a quorum"
        assert isinstance(ack, m.SendAck) and ack.seq == 2, ack
        return {"etcd_healthy": healthy, "ack": ack_s, "client_drops": float(clock.drops)}
    finally:
        await factory.close_all()
        await asyncio.to_thread(node.stop)


async def cutoff(
    root: Path, fast: bool, etcd: EtcdCluster, window: float, *, silent: bool = False
) -> dict[str, float]:
    """Node B reaches etcd through one member only; that member is killed (etcd
    keeps its quorum, node A is fine). B's client, who knows A from B's
    welcome, should move to A and get its message acknowledged there."""
    prefix = f"c-{root.name}"
    lone = etcd.members[2]
    a = await asyncio.to_thread(chat_node(root, "a", f"{etcd.url}/{prefix}").start)
    b = await asyncio.to_thread(chat_node(root, "b", f"etcd://{lone.endpoint}/{prefix}").start)
    factory = ClientFactory(root / "homes")
    try:
        # B only (a two-node string would spread alice by her name): she
        # learns A from B's welcome.
        alice = await alice_and_bob(factory, b.connect, a.connect, fast)
        assert alice.status.endpoint == b.endpoint
        clock = Clock(alice)
        clock.mark()
        t0 = clock.t0
        if silent:
            lone.freeze()
        else:
            await asyncio.to_thread(lone.kill)
        txn = str(await alice.send("r", "during", wait=False))
        nan = float("nan")
        try:
            ack = await alice.wait_ack(txn, window)
            assert isinstance(ack, m.SendAck) and ack.seq == 2, ack
            ack_s = time.perf_counter() - t0
            acked_during, heal = 1.0, nan
        except RequestTimeout:
            acked_during, ack_s = 0.0, nan
            t_heal = time.perf_counter()
            if silent:
                lone.thaw()
            else:
                lone.restart()
            ack = await alice.wait_ack(txn, 60)
            assert isinstance(ack, m.SendAck) and ack.seq == 2, ack
            heal = time.perf_counter() - t_heal
        moved = float(alice.status.endpoint == a.endpoint)
        return {
            "detect": clock.left_live if clock.left_live is not None else nan,
            "live": clock.live if clock.live is not None else nan,
            "ready": clock.ready if clock.ready is not None else nan,
            "ack": ack_s,
            "acked_during_cut": acked_during,
            "moved_to_other_node": moved,
            "client_drops": float(clock.drops),
            "ack_after_heal": heal,
        }
    finally:
        await factory.close_all()
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)
        if silent:
            lone.thaw()
        if not lone.alive():
            lone.restart()
        await asyncio.to_thread(etcd.wait_healthy)


# --- driver -------------------------------------------------------------------------------

SCENARIOS = (
    "single",
    "failover",
    "freeze",
    "leader",
    "quorum",
    "leaderfreeze",
    "followerfreeze",
    "cutoff",
    "cutoffsilent",
)
DEFAULT = SCENARIOS[:5]  # about 3 minutes; the etcd freezes and the cutoff are run with --only


def scenario(
    name: str, where: Path, args: argparse.Namespace, etcd: EtcdCluster | None
) -> Coroutine[Any, Any, dict[str, float]]:
    if name == "single":
        return single(where, args.fast)
    assert etcd is not None
    if name in ("failover", "freeze"):
        return failover(where, args.fast, etcd, freeze=name == "freeze")
    if name == "quorum":
        return quorum(where, args.fast, etcd, args.outage)
    if name in ("cutoff", "cutoffsilent"):
        return cutoff(where, args.fast, etcd, args.cut, silent=name == "cutoffsilent")
    role = "follower" if name.startswith("follower") else "leader"
    return member(where, args.fast, etcd, role=role, freeze=name.endswith("freeze"))


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] == r[key]]  # NaN: did not happen
        if not values:
            continue
        out[key] = {
            "n": len(values),
            "median": statistics.median(values),
            "max": max(values),
            "min": min(values),
        }
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [s for s in args.only.split(",") if s] if args.only else list(DEFAULT)
    for name in wanted:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reps": args.reps,
        "client_settings": "fast (tests)" if args.fast else "defaults",
        "outage_s": args.outage,
        "python": platform.python_version(),
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="curvechat-recovery-") as tmp:
        root = Path(tmp)
        etcd: EtcdCluster | None = None
        try:
            if any(s != "single" for s in wanted):
                etcd = await asyncio.to_thread(EtcdCluster(root / "etcd", 3).start)
            for name in wanted:
                runs: list[dict[str, float]] = []
                for rep in range(args.reps):
                    where = root / f"{name}-{rep}"
                    where.mkdir()
                    job = scenario(name, where, args, etcd)
                    run = await asyncio.wait_for(job, 180)
                    runs.append(run)
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in run.items())
                    print(f"{name} #{rep + 1}: {shown}", flush=True)
                results["scenarios"][name] = {"runs": runs, "summary": summary(runs)}
        finally:
            if etcd is not None:
                etcd.stop()
    return results


def report(results: dict[str, Any]) -> None:
    print()
    print(
        f"recovery times in seconds ({results['client_settings']} client settings,"
        f" {results['reps']} reps, {results['date_utc']})"
    )
    print(f"{'scenario':14} {'measure':20} {'n':>3} {'median':>8} {'max':>8} {'min':>8}")
    for name, data in results["scenarios"].items():
        for key, s in data["summary"].items():
            print(
                f"{name:14} {key:20} {s['n']:>3} {s['median']:8.3f} {s['max']:8.3f} {s['min']:8.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="", help=f"comma-separated: {','.join(SCENARIOS)}")
    parser.add_argument("--outage", type=float, default=5.0, help="quorum loss, seconds")
    parser.add_argument("--cut", type=float, default=20.0, help="cutoff: window, seconds")
    parser.add_argument("--fast", action="store_true", help="the tests' fast client settings")
    parser.add_argument("--json", type=Path, help="also write the results here")
    ns = parser.parse_args()
    res = asyncio.run(main(ns))
    report(res)
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(res, indent=2) + "\n")
