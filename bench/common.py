"""Helpers shared by the orchestrator, the bare limits and the load workers."""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq

from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.protocol import encode_reply
from curvechat.protocol import messages as m

#: Length of the text of a benchmark message: a typical chat line. Its
#: envelope (one 256-byte padding block) is what most real messages weigh.
TEXT_LEN = 120
TEXT = ("The quick brown fox jumps over the lazy dog; " * 4)[:TEXT_LEN]
RATE_UNLIMITED = "1000000"
BYTES_UNLIMITED = "1000000000000"  # bytes/s: --rate-user-bytes out of the way
#: The latency rows' pace: one message every 10 ms. The bare round trip and
#: commit are also measured on this schedule (a diagnostic): after the idle
#: time between messages they cost more than in a back-to-back loop.
LATENCY_INTERVAL = 0.01
CLK_TCK = os.sysconf("SC_CLK_TCK")


def recv_ready(sock: zmq.Socket) -> Iterator[bytes]:
    """Every frame `sock` has ready now, without blocking."""
    while True:
        try:
            yield sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def msg_id(worker: int, client: int, seq: int) -> int:
    return (worker * 10_000 + client) * 100_000_000 + seq


def txn_of(mid: int) -> str:
    return f"b{mid:020d}"


def sample_envelope() -> m.Envelope:
    """A benchmark message sealed by a throwaway identity (for its size)."""
    return seal_message(
        Identity.generate("sizer"),
        room="room-0",
        epoch=0,
        key=os.urandom(32),
        txn=txn_of(msg_id(1, 1, 1)),
        plaintext=Plaintext(text=TEXT, ts=int(time.time() * 1000)),
    )


def push_frame_size() -> int:
    """Bytes of one real `push_message` frame carrying a benchmark envelope."""
    env = sample_envelope()
    push = m.MessagePush(room=env.room, message=m.StoredMessage(seq=12345, ts=1, envelope=env))
    return len(encode_reply(0, push))


# --- light decoding of server frames (what a load receiver needs) -------------
class _LEnv(msgspec.Struct):
    txn: str


class _LStored(msgspec.Struct):
    seq: int
    envelope: _LEnv


class _LMsg(msgspec.Struct):
    type: str
    txn: str | None = None
    seq: int = 0
    message: _LStored | None = None
    items: list[_LItem] | None = None  # a batch's
    mark: int = 0  # a push_mark's


class _LItem(msgspec.Struct):
    rid: int
    msg: _LMsg


class _LFrame(msgspec.Struct):
    rid: int
    msg: _LMsg


_light = msgspec.msgpack.Decoder(_LFrame)

Light = tuple[int, str, str | None, int]


def light_decode(data: bytes) -> list[Light]:
    """(rid, type, txn, seq) of a frame, or of each item of a `batch` frame:
    txn and seq of a push's message or of an ack (of a `push_mark`: its mark
    as the seq).

    Replies whose fields do not fit the light shape (errors carry a string
    `message`) come back as ("error"-ish) types with txn None, but an error
    with its code where the txn would be."""
    try:
        f = _light.decode(data)
    except msgspec.ValidationError:
        g = msgspec.msgpack.decode(data)
        msg = g.get("msg", {})
        kind = str(msg.get("type", "?"))
        code = str(msg.get("code", "")) if kind == "error" else None
        return [(int(g.get("rid", 0)), kind, code, 0)]
    if f.msg.items is not None:
        return [_light_one(item.rid, item.msg) for item in f.msg.items]
    return [_light_one(f.rid, f.msg)]


def _light_one(rid: int, msg: _LMsg) -> Light:
    if msg.mark:  # flow control: the mark to echo, where a seq would be
        return rid, msg.type, None, msg.mark
    if msg.message is not None:
        return rid, msg.type, msg.message.envelope.txn, msg.message.seq
    return rid, msg.type, msg.txn, msg.seq


# --- process statistics ---------------------------------------------------------
def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def proc_runq_wait_seconds(pid: int) -> float:
    """Time the process's main thread spent runnable but waiting for a CPU."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Sampler:
    """Samples a process's RSS and CPU in a thread, every `interval` seconds."""

    pid: int
    interval: float = 0.25
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._stop.clear()
        self.samples = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = proc_mem(self.pid)["VmRSS"]
                cpu = proc_cpu_seconds(self.pid)
            except (OSError, KeyError):
                return
            self.samples.append((time.monotonic(), rss, cpu))
            self._stop.wait(self.interval)

    def stop(self) -> list[tuple[float, int, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        return self.samples


def machine_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat
    (idle and iowait are not busy; softirq work, which no process is
    charged for, is)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


class Window:
    """CPU seconds and peak RSS of a set of processes over a measured window,
    and how busy the whole machine's CPUs were."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.machine0 = machine_cpu()
        self.t0 = time.monotonic()
        self.cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        self.wait0 = {name: proc_runq_wait_seconds(pid) for name, pid in pids.items()}
        self.samplers = {name: Sampler(pid).start() for name, pid in pids.items()}

    def close(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy1, total1 = machine_cpu()
        busy0, total0 = self.machine0
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        if total1 > total0:
            out["machine_busy_pct"] = round(100 * (busy1 - busy0) / (total1 - total0), 1)
        for name, pid in self.pids.items():
            samples = self.samplers[name].stop()
            cpu = proc_cpu_seconds(pid) - self.cpu0[name]
            wait = proc_runq_wait_seconds(pid) - self.wait0[name]
            rss = [s[1] for s in samples] or [proc_mem(pid)["VmRSS"]]
            out[name] = {
                "cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
                # main thread runnable but not running: how crowded the CPUs were
                "runq_wait_pct": round(100 * wait / wall, 1) if wall > 0 else 0.0,
                "rss_start_mb": round(rss[0] / 2**20, 1),
                "rss_peak_mb": round(max(rss) / 2**20, 1),
                "rss_end_mb": round(rss[-1] / 2**20, 1),
                "rss_timeline_mb": [round(x / 2**20, 1) for x in rss[:: max(1, round(1 / 0.25))]],
            }
        return out


# --- statistics ---------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary_ms(values_ns: list[int]) -> dict[str, float]:
    ms = [v / 1e6 for v in values_ns]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 3),
        "p99": round(pct(ms, 99), 3),
        "max": round(max(ms), 3),
    }
