"""Starting load workers and servers, and turning raw timings into figures."""

from __future__ import annotations

import contextlib
import itertools
import sys
import urllib.request
from array import array
from pathlib import Path
from typing import Any

from bench import worker
from bench.common import summary_ms
from bench.limits import SPAWN
from curvechat.crypto.identity import Identity
from curvechat.protocol.connect import parse_connect

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from support.clients import ClientFactory  # noqa: E402
from support.servers import ServerProcess  # noqa: E402


class Users:
    """Identities made by the orchestrator, handed to workers as seeds."""

    def __init__(self) -> None:
        self.ids: dict[str, Identity] = {}

    def get(self, name: str) -> Identity:
        if name not in self.ids:
            self.ids[name] = Identity.generate(name)
        return self.ids[name]

    def spec(self, name: str, **extra: Any) -> dict[str, Any]:
        ident = self.get(name)
        return {
            "user": name,
            "sign_seed": ident.sign_seed,
            "transport_secret": ident.transport_secret,
            **extra,
        }


class Workers:
    """Load-generator processes (bench.worker), driven over pipes."""

    batch = True
    """Whether their clients' hellos ask for `batch` frames (`--plain-frames`: no)."""
    sends = True
    """Whether a windowed sender puts every send it can make at once into one
    `sends` frame, as the client engine does (`--single-sends`: one frame each)."""

    def __init__(
        self, specs: list[list[dict[str, Any]]], servers: list[ServerProcess], *, nice: int = 0
    ) -> None:
        """`nice`: the workers' scheduling priority (the idle clients' own
        heartbeats would run on other machines: they yield the CPU here)."""
        addrs = [parse_connect(s.connect)[0] for s in servers]
        self.pipes = []
        self.procs = []
        # user -> (worker index, client index within that worker)
        self.where: dict[str, tuple[int, int]] = {}
        for i, clients in enumerate(specs):
            for c, client in enumerate(clients):
                self.where[client["user"]] = (i, c)
            parent, child = SPAWN.Pipe()
            spec = {
                "clients": clients,
                "endpoints": [a.endpoint for a in addrs],
                "server_keys": [a.server_key for a in addrs],
                "nice": nice,
                "batch": self.batch,
                "sends": self.sends,
            }
            p = SPAWN.Process(target=worker.main, args=(i + 1, spec, child), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def send(self, cmds: list[tuple[str, Any] | None]) -> None:
        for pipe, cmd in zip(self.pipes, cmds, strict=True):
            if cmd is not None:
                pipe.send(cmd)

    def collect(self, which: list[bool] | None = None) -> list[Any]:
        out = []
        for i, pipe in enumerate(self.pipes):
            if which is not None and not which[i]:
                out.append(None)
                continue
            status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"worker {i + 1} failed: {value}")
            out.append(value)
        return out

    def all(self, cmd: str, arg: Any = None) -> list[Any]:
        self.send([(cmd, arg)] * len(self.pipes))
        return self.collect()

    def stop_runs(self) -> None:
        for pipe in self.pipes:
            pipe.send(("stop", None))

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(("quit", None))
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


async def create_rooms(
    root: Path, servers: list[ServerProcess], users: Users, rooms: dict[str, list[str]]
) -> None:
    """Each room is created by its first member, through the real client engine."""
    factory = ClientFactory(root / "homes")
    try:
        for i, (room, members) in enumerate(rooms.items()):
            creator = members[0]
            client, _ = await factory.make(
                creator,
                servers[i % len(servers)].connect,
                identity=users.get(creator),
                home_name=f"{creator}-{room}",
            )
            await client.create_room(room, members[1:])
            await factory.close(client)
    finally:
        await factory.close_all()


def scrape(server: ServerProcess) -> dict[str, float]:
    """The node's Prometheus counters (sums over labels)."""
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode()
    except OSError:
        return out  # a node too busy to answer: its counters are left out
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        try:
            out[base] = out.get(base, 0.0) + float(value)
        except ValueError:
            continue
    return out


def analyse(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Send→ack and send→deliver figures from the workers' raw timings."""
    t_send: dict[int, int] = {}
    ack_lat: list[int] = []
    acks = 0
    errors = 0
    first_send = None
    last_ack = 0
    stored_out_of_order = 0
    for r in results:
        for s in r["sends"]:
            # One sender, one room: the seqs its sends were stored at must
            # rise in the order it sent them (acks may arrive in any order).
            seqs = array("q")
            seqs.frombytes(s.get("seqs", b""))
            acked_seqs = [q for q in seqs if q > 0]
            stored_out_of_order += sum(1 for a, b in itertools.pairwise(acked_seqs) if b <= a)
            ids = array("q")
            ids.frombytes(s["ids"])
            ts = array("q")
            ts.frombytes(s["t_send"])
            ta = array("q")
            ta.frombytes(s["t_ack"])
            for mid, a, b in zip(ids, ts, ta, strict=True):
                t_send[mid] = a
                first_send = a if first_send is None else min(first_send, a)
                if b > 0:
                    acks += 1
                    ack_lat.append(b - a)
                    last_ack = max(last_ack, b)
                elif b < 0:
                    errors += 1
    deliver: list[int] = []
    last_recv = 0
    delivered = 0
    for r in results:
        ids = array("q")
        ids.frombytes(r["recv_ids"])
        tr = array("q")
        tr.frombytes(r["recv_t"])
        for mid, t in zip(ids, tr, strict=True):
            t0 = t_send.get(mid)
            if t0 is None:
                continue
            delivered += 1
            deliver.append(t - t0)
            last_recv = max(last_recv, t)
    sent = len(t_send)
    out: dict[str, Any] = {
        "sent": sent,
        "acked": acks,
        "refused": errors,
        "delivered": delivered,
        "send_ack_ms": summary_ms(ack_lat),
        "send_deliver_ms": summary_ms(deliver),
    }
    if first_send is not None and last_ack > first_send:
        out["acked_per_s"] = round(acks / ((last_ack - first_send) / 1e9), 1)
    if first_send is not None and last_recv > first_send:
        out["delivered_per_s"] = round(delivered / ((last_recv - first_send) / 1e9), 1)
    out["loadgen_cpu_pct"] = [round(r["cpu_pct"], 1) for r in results]
    out["worker_errors"] = [r["errors"] for r in results if r["errors"]]
    # sends stored out of the order they were sent in (must be 0)
    out["order_violations"] = stored_out_of_order
    # acks that arrived before the ack of a send sent earlier (allowed; counted)
    out["acks_out_of_order"] = sum(r.get("order_violations", 0) for r in results)
    return out
