"""A process of real client engines (`ChatClient`, end-to-end encryption on)
for the real-client workloads, driven by the orchestrator over a pipe.

Every engine has its own identity, CURVE key, local cache and connection,
and registers, syncs, seals, verifies and decrypts exactly as the terminal
client does. Commands (each answered with ``("ok", value)``):

* ``("start", None)``: start every engine and wait until each is ready.
* ``("create", {"room", "creator", "members"})``: the creator makes the room.
* ``("joined", {"room", "members"})``: wait until every local member holds
  a key of the room.
* ``("run", {"room", "senders", "seconds", "rate" | "backlog"})``: the named
  senders send for `seconds`, either paced (`rate` messages/s each) or at
  full rate (each keeps `backlog` messages queued and unacknowledged); every
  engine records what it is shown. Answers with send, ack and receipt times
  (monotonic ns: one clock for every process on the machine), keyed by txn.
* ``("solo", {"room", "sender", "count"})``: one engine queues `count`
  messages at once and waits for every ack; its acked sends/s.

It must never touch the node's store or use a private path into the engine
to send: what it measures is what a user's client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import TEXT
from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.engine import ChatClient
from curvechat.crypto.identity import Identity
from curvechat.protocol.connect import parse_connect

CHUNK = 32
"""A full-rate sender queues this many messages at a time."""


class Engine:
    def __init__(self, spec: dict[str, Any], home: Path, connect: str) -> None:
        ident = Identity.from_secrets(spec["user"], spec["sign_seed"], spec["transport_secret"])
        home.mkdir(parents=True, exist_ok=True)
        self.user = spec["user"]
        self.cache = Cache(home / "cache.db", cache_key(ident.sign_seed))
        self.client = ChatClient(
            ident, self.cache, parse_connect(connect), on_event=self.on_event, request_timeout=60.0
        )
        self.recording = False
        self.sent: dict[str, int] = {}  # txn -> queued at
        self.acks: dict[str, tuple[int, int]] = {}  # txn -> (acked at, seq)
        self.shown: list[tuple[str, int]] = []  # (txn, shown at) of others' messages
        self.unacked = 0
        self.failed: list[str] = []  # sends that failed for good (should be none)
        self.acked_event = asyncio.Event()

    def on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.SendFailed):
            self.unacked -= 1
            self.failed.append(f"{e.code}: {e.message}")
            self.acked_event.set()
        elif isinstance(e, ev.SendAcked):
            self.unacked -= 1
            self.acked_event.set()
            if self.recording:
                self.acks[e.txn] = (time.monotonic_ns(), e.seq)
        elif isinstance(e, ev.MessageReceived) and self.recording and not e.mine:
            self.shown.append((e.message.txn, time.monotonic_ns()))

    def queue(self, room: str, n: int) -> None:
        texts = [TEXT] * n
        many = getattr(self.client.outbox, "queue_many", None)
        now = time.monotonic_ns()
        txns = many(room, texts) if many else [self.client.queue(room, t) for t in texts]
        self.unacked += len(txns)
        if self.recording:
            for txn in txns:
                self.sent[txn] = now

    async def full_rate(self, room: str, backlog: int, until: float) -> None:
        while time.monotonic() < until:
            if self.unacked + CHUNK <= backlog:
                self.queue(room, CHUNK)
                continue
            self.acked_event.clear()
            try:
                await asyncio.wait_for(self.acked_event.wait(), max(0.0, until - time.monotonic()))
            except TimeoutError:
                return

    async def paced(self, room: str, rate: float, until: float) -> None:
        step = 1.0 / rate
        due = time.monotonic()
        while due < until:
            self.queue(room, 1)
            due += step
            await asyncio.sleep(max(0.0, due - time.monotonic()))


class LoopLag:
    """How late the event loop runs a 5 ms timer, all along a run: what a
    user of the terminal client would feel as a frozen screen."""

    TICK = 0.005

    def __init__(self) -> None:
        self.late: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.TICK
            await asyncio.sleep(self.TICK)
            self.late.append(max(0.0, loop.time() - due))

    def summary(self) -> dict[str, float]:
        s = sorted(self.late) or [0.0]
        return {
            "p50": round(s[len(s) // 2] * 1e3, 2),
            "p99": round(s[int(len(s) * 0.99)] * 1e3, 2),
            "max": round(s[-1] * 1e3, 2),
        }


async def _serve(spec: dict[str, Any], pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    root = Path(spec["home"])
    engines = {c["user"]: Engine(c, root / c["user"], spec["connect"]) for c in spec["clients"]}
    lock = threading.Lock()

    def recv() -> tuple[str, Any]:
        with lock:
            cmd: tuple[str, Any] = pipe.recv()
            return cmd

    async def settle(room: str, users: list[str], timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while not all(engines[u].client.core.held(room) for u in users if u in engines):
                await asyncio.sleep(0.05)

    async def run(cfg: dict[str, Any]) -> dict[str, Any]:
        for e in engines.values():
            e.recording = True
            e.sent, e.acks, e.shown, e.failed = {}, {}, [], []
        senders = [engines[u] for u in cfg["senders"] if u in engines]
        reconnects = sum(e.client.conn.reconnects for e in engines.values())
        cpu0, t0 = os.times(), time.monotonic()
        until = t0 + cfg["seconds"]
        if "rate" in cfg:
            jobs = [e.paced(cfg["room"], cfg["rate"], until) for e in senders]
        else:
            jobs = [e.full_rate(cfg["room"], cfg["backlog"], until) for e in senders]
        await asyncio.gather(*jobs)
        # the messages still queued are acked and shown after the window: wait for them
        drain_until = time.monotonic() + cfg.get("drain", 120.0)
        while any(e.unacked > 0 for e in senders) and time.monotonic() < drain_until:
            await asyncio.sleep(0.05)
        shown = -1  # then until nothing more is shown for a second
        while shown != (shown := sum(len(e.shown) for e in engines.values())):
            await asyncio.sleep(cfg.get("settle", 1.0))
        cpu1, wall = os.times(), time.monotonic() - t0
        for e in engines.values():
            e.recording = False
        return {
            "cpu_s": cpu1.user - cpu0.user + cpu1.system - cpu0.system,
            "wall_s": wall,
            "sent": {u: e.sent for u, e in engines.items() if e.sent},
            "acks": {u: e.acks for u, e in engines.items() if e.acks},
            "shown": [s for e in engines.values() for s in e.shown],
            "failed": [f for e in engines.values() for f in e.failed],
            "unacked_at_end": sum(e.unacked for e in senders),
            "reconnects": sum(e.client.conn.reconnects for e in engines.values()) - reconnects,
        }

    async def solo(cfg: dict[str, Any]) -> dict[str, Any]:
        e = engines[cfg["sender"]]
        lag = LoopLag()
        ticker = asyncio.create_task(lag.run())
        try:
            cpu0, t0 = os.times(), time.monotonic()
            e.queue(cfg["room"], cfg["count"])
            async with asyncio.timeout(600):
                while e.unacked > 0:
                    e.acked_event.clear()
                    await e.acked_event.wait()
            wall = time.monotonic() - t0
            cpu1 = os.times()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        return {
            "count": cfg["count"],
            "seconds": round(wall, 3),
            "acked_per_s": round(cfg["count"] / wall, 1),
            "client_cpu_pct": round(
                100 * (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall, 1
            ),
            "loop_late_ms": lag.summary(),
        }

    try:
        while True:
            cmd, arg = await loop.run_in_executor(None, recv)
            try:
                if cmd == "quit":
                    break
                if cmd == "start":
                    for e in engines.values():
                        await e.client.start()
                    for e in engines.values():
                        assert await e.client.wait_ready(120), f"{e.user} not ready"
                    value: Any = len(engines)
                elif cmd == "create":
                    await engines[arg["creator"]].client.create_room(arg["room"], arg["members"])
                    value = True
                elif cmd == "joined":
                    await settle(arg["room"], arg["members"])
                    value = True
                elif cmd == "run":
                    value = await run(arg)
                elif cmd == "solo":
                    value = await solo(arg)
                else:
                    raise ValueError(cmd)
            except Exception as exc:  # told to the orchestrator, which stops the run
                pipe.send(("error", repr(exc)))
                continue
            pipe.send(("ok", value))
    finally:
        for e in engines.values():
            await e.client.close()
            e.cache.close()


def main(spec: dict[str, Any], pipe: Connection) -> None:
    asyncio.run(_serve(spec, pipe))
