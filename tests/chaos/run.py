"""One chaos run: start the cluster, the workload and (optionally) the storm
clients, inject the faults on their schedule, heal, drain, check, report.

    python -m chaos.run --duration 600 --results results   (with tests/ on sys.path)

or `make chaos` (scripts/chaos.py). Exit code 0 only if every criterion holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curvechat.client.state import ConnState

from . import report as rep
from .checker import check
from .cluster import ChaosCluster
from .gaps import client_gaps
from .nemesis import (
    MAIN_KINDS,
    latency_schedule,
    mixed_schedule,
    run_schedule,
    short_schedule,
)
from .workload import History, Workload

STORM_SCRIPT = Path(__file__).with_name("storm.py")


@dataclass
class Config:
    duration: float = 600.0
    seed: int = 1
    clients: int = 12
    rooms: int = 4
    nodes: int = 3
    schedule: str = "mixed"  # or "short", or "latency"
    storm_clients: int = 1000
    # when the storm clients connect (then they are cut at once), as fractions of duration
    storms: list[float] = field(default_factory=lambda: [0.4, 0.8])
    ack_timeout: float = 4.0
    faults: list[str] = field(default_factory=list)  # main fault kinds (default: all)


class Storm:
    """The light clients' process (storm.py) and the cut that sends them all
    reconnecting at once."""

    def __init__(self, cluster: ChaosCluster, n: int, log: Path) -> None:
        self.cluster = cluster
        self.n = n
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        connects = [node.connect for node in self.cluster.nodes]
        self._log = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(STORM_SCRIPT),
            str(self.n),
            *connects,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
        )

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the storm clients' process ended")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ready(self, timeout: float = 180.0) -> float:
        return float((await self._line(timeout))["s"])

    async def cut(self, history: History, workload: Workload) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        at = history.now()
        wall = time.time()
        cut = sum(node.client_proxy.cut() for node in self.cluster.nodes)
        self.proc.stdin.write(json.dumps({"cut": wall}).encode() + b"\n")
        await self.proc.stdin.drain()
        info: dict[str, Any] = {"at": at, "clients": self.n, "cut": cut, "all_reconnected": False}

        async def engine_clients() -> None:
            # The engine clients were cut too: time until all are live again.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(120):
                    while any(
                        c.status.state is not ConnState.LIVE for c in workload.clients.values()
                    ):
                        await asyncio.sleep(0.05)
                    info["engine_clients_live"] = round(history.now() - at, 3)

        engines = asyncio.create_task(engine_clients())
        progress = []
        with contextlib.suppress(TimeoutError, RuntimeError):
            async with asyncio.timeout(120):
                while True:
                    line = await self._line(120)
                    if "done" in line:
                        info.update(all_reconnected=True, **line)
                        break
                    progress.append([line["t"], line["reconnected"]])
        info["progress"] = progress[-50:]
        await engines
        history.fault("reconnect-storm", at, history.now(), target=f"{self.n} clients")
        return info

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"{}\n")
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()


async def run(config: Config, work: Path, results: Path | None) -> dict[str, Any]:
    # Stopped with SIGTERM, the run is cancelled: its cleanup stops every etcd
    # member, node and client it started, instead of leaving them running.
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)
    started = time.monotonic()
    name = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    history = History()
    cluster = ChaosCluster(work / "cluster", config.nodes)
    workload: Workload | None = None
    storm: Storm | None = None
    storms: list[dict[str, Any]] = []
    drain: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    relists: dict[str, int] = {}
    fallbacks: list[tuple[float, str]] = []
    workload_errors: list[str] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        # Started to its end even if cancelled meanwhile: `stop` then finds
        # every process it started (a thread cannot be cancelled halfway).
        starting = asyncio.ensure_future(asyncio.to_thread(cluster.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            await asyncio.wait([starting])
            raise
        workload = Workload(
            cluster,
            work / "homes",
            history,
            clients=config.clients,
            rooms=config.rooms,
            ack_timeout=config.ack_timeout,
            seed=config.seed,
        )
        await workload.setup()
        cluster.rooms = list(history.rooms)
        names = [n.name for n in cluster.nodes]
        if config.schedule == "short":
            steps = short_schedule(names)
        elif config.schedule == "latency":
            steps = latency_schedule(names)
        else:
            steps = mixed_schedule(config.duration, config.seed, names, config.faults or None)
        workload.start()
        t_base = history.now()

        async def storms_task() -> None:
            # The light clients live only around each storm: connected (a
            # gentle ramp), all cut at once, timed until all are back, ended.
            nonlocal storm
            assert workload is not None
            for i, fraction in enumerate(config.storms):
                await asyncio.sleep(max(0.0, t_base + fraction * config.duration - history.now()))
                storm = Storm(cluster, config.storm_clients, work / f"storm-{i}.log")
                await storm.start()
                try:
                    ramp = await storm.ready()
                    info = await storm.cut(history, workload)
                    info["ramp_s"] = ramp
                    storms.append(info)
                except (TimeoutError, RuntimeError) as exc:
                    storms.append(
                        {
                            "at": history.now(),
                            "clients": config.storm_clients,
                            "all_reconnected": False,
                            "error": repr(exc),
                        }
                    )
                finally:
                    await storm.stop()
                    storm = None

        tasks.append(asyncio.create_task(run_schedule(cluster, history, steps)))
        if config.storm_clients:
            tasks.append(asyncio.create_task(storms_task()))
        await asyncio.sleep(config.duration)
        await asyncio.gather(*tasks)  # the last faults heal
        workload_errors = await workload.stop()
        await asyncio.to_thread(cluster.heal_network)
        await asyncio.to_thread(cluster.ensure_up)
        drain = await workload.drain()
    finally:
        # The cleanup itself is not cut short by a second SIGTERM; faults and
        # storms still under way end first.
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if storm is not None:
            await storm.stop()
        if workload is not None:
            await workload.close()
        problems, relists, fallbacks = await asyncio.to_thread(cluster.stop)
    hist = history.as_dict()
    result = check(hist)
    result["drain"] = drain
    result["gaps"] = client_gaps(hist)
    storm_checks = None
    if config.storm_clients:
        storm_checks = {
            "all_reconnected": bool(storms) and all(s["all_reconnected"] for s in storms)
        }
    crit = rep.criteria(result, storm_checks)
    crit["no workload client crashed"] = not workload_errors
    out = {
        "name": name,
        "config": asdict(config),
        "passed": all(crit.values()),
        "criteria": crit,
        "result": result,
        "storms": storms,
        "faults": history.faults,
        "node_log_problems": problems,
        "relists": relists,
        # Run-relative times, like the faults'.
        "link_fallbacks": [
            {"t": round(t - history.wall0, 3), "owner": owner} for t, owner in fallbacks
        ],
        "workload_errors": workload_errors,
        "wall_s": round(time.monotonic() - started, 1),
    }
    if results is not None:
        rep.write(results / f"chaos-{name}", out, hist)
        out["folder"] = str(results / f"chaos-{name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--clients", type=int, default=12, help="engine clients")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--storm-clients", type=int, default=1000, help="0: no storm")
    parser.add_argument("--schedule", choices=["mixed", "short", "latency"], default="mixed")
    parser.add_argument(
        "--faults",
        default="",
        help=f"main fault kinds, comma-separated (default all: {','.join(MAIN_KINDS)})",
    )
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    config = Config(
        duration=args.duration,
        seed=args.seed,
        clients=args.clients,
        rooms=args.rooms,
        storm_clients=args.storm_clients,
        schedule=args.schedule,
        faults=[k for k in args.faults.split(",") if k],
    )
    unknown = set(config.faults) - set(MAIN_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    # A hung run (a deadlock with the GIL held, say) must not hang `make chaos`
    # silently: dump every thread's stack and exit.
    faulthandler.dump_traceback_later(args.duration + 900, exit=True)
    work = Path(tempfile.mkdtemp(prefix="curvechat-chaos-"))
    print(f"chaos: {config}; work folder {work}", flush=True)
    try:
        out: dict[str, Any] | None = asyncio.run(run(config, work, args.results))
    except asyncio.CancelledError:
        print("chaos: stopped (SIGTERM); everything it started is stopped", flush=True)
        out = None
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if out is None:
        return 143
    print(rep.summary(out), flush=True)
    print(f"report: {out.get('folder')}")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
