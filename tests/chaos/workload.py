"""The workload: full engine clients (CURVE, end-to-end encryption, the
persistent outbox) in several rooms, each sending one message at a time and
recording every send as invoked / acked / failed / ambiguous, and everything
its engine reports receiving. After the faults, a final drain."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient
from curvechat.client.errors import ClientError, RequestTimeout, ServerRefused
from curvechat.client.state import ConnState

from .cluster import ChaosCluster
from support.clients import ClientFactory


class History:
    """What the checker reads (see checker.py), with times from `t0`."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.rooms: dict[str, list[str]] = {}
        self.ops: list[dict[str, Any]] = []
        self._ops: dict[tuple[str, str], dict[str, Any]] = {}  # (client, txn) -> op
        self.receipts: list[dict[str, Any]] = []
        self.final: dict[str, dict[str, list[list[Any]]]] = {}
        self.faults: list[dict[str, Any]] = []
        self.windows: dict[str, list[list[float]]] = {"quorum_loss": [], "workload": []}
        self.status: list[dict[str, Any]] = []  # each client's connection states

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def invoke(self, client: str, room: str, txn: str, text: str, t: float) -> dict[str, Any]:
        op = {
            "client": client,
            "room": room,
            "txn": txn,
            "text": text,
            "t_invoke": t,
            "outcome": "pending",
            "t_ack": None,
            "seq": None,
            "duplicate": False,
            "t_timeout": None,
        }
        self.ops.append(op)
        self._ops[(client, txn)] = op
        return op

    def on_event(self, client: str, event: ev.Event) -> None:
        t = self.now()
        if isinstance(event, ev.MessageReceived):
            msg = event.message
            self.receipts.append(
                {
                    "client": client,
                    "room": msg.room,
                    "seq": msg.seq,
                    "sender": msg.sender,
                    "txn": msg.txn,
                    "text": msg.text,
                    "error": msg.error,
                    "t": t,
                    "live": event.live,
                }
            )
        elif isinstance(event, ev.StatusChanged):
            st = event.status
            self.status.append(
                {
                    "client": client,
                    "t": t,
                    "state": str(st.state),
                    "endpoint": st.endpoint,
                    "detail": st.detail,
                }
            )
        elif isinstance(event, ev.SendAcked):
            op = self._ops.get((client, event.txn))
            if op is not None and op["seq"] is None:
                op["seq"], op["t_ack"] = event.seq, t
        elif isinstance(event, ev.SendFailed):
            op = self._ops.get((client, event.txn))
            if op is not None and op["seq"] is None:
                op["outcome"] = "fail"
                op["error"] = event.code

    def fault(self, name: str, start: float, end: float | None = None, **info: Any) -> None:
        self.faults.append({"name": name, "start": start, "end": end, **info})

    def as_dict(self) -> dict[str, Any]:
        return {
            "rooms": self.rooms,
            "ops": self.ops,
            "receipts": self.receipts,
            "final": self.final,
            "faults": self.faults,
            "windows": self.windows,
            "status": self.status,
            "wall_start": self.wall0,
        }


class Workload:
    def __init__(
        self,
        cluster: ChaosCluster,
        home: Path,
        history: History,
        *,
        clients: int = 9,
        rooms: int = 3,
        interval: tuple[float, float] = (0.1, 0.4),
        ack_timeout: float = 8.0,
        seed: int = 0,
    ) -> None:
        self.cluster = cluster
        self.factory = ClientFactory(home)
        self.history = history
        self.n_clients = clients
        self.n_rooms = rooms
        self.interval = interval
        self.ack_timeout = ack_timeout
        self.rng = random.Random(seed)
        self.clients: dict[str, ChatClient] = {}
        self.membership: dict[str, list[str]] = {}  # client -> rooms
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    async def setup(self) -> None:
        nodes = self.cluster.nodes
        names = [f"c{i:02d}" for i in range(self.n_clients)]
        for i, name in enumerate(names):
            connect = nodes[i % len(nodes)].connect
            client, _rec = await self.factory.make(name, connect, request_timeout=4.0)
            client.subscribe(lambda e, n=name: self.history.on_event(n, e))
            self.clients[name] = client
        # Each client in two rooms; each room with about 2/rooms of the clients.
        for r in range(self.n_rooms):
            room = f"room{r}"
            members = [
                n for i, n in enumerate(names) if i % self.n_rooms in (r, (r + 1) % self.n_rooms)
            ]
            self.history.rooms[room] = members
            for member in members:
                self.membership.setdefault(member, []).append(room)
            owner = self.clients[members[0]]
            await owner.create_room(room, members[1:])
        async with asyncio.timeout(30):
            for room, members in self.history.rooms.items():
                for member in members:
                    while self.clients[member].cache.room(room) is None:
                        await asyncio.sleep(0.05)

    def start(self) -> None:
        self._running = True
        self.history.windows["workload"].append([self.history.now(), self.history.now()])
        self._tasks = [
            asyncio.create_task(self._client_loop(name), name=f"load-{name}")
            for name in self.clients
        ]

    async def stop(self) -> list[str]:
        """Stop sending; returns the errors that ended a client's loop early."""
        self._running = False
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.history.windows["workload"]:
            self.history.windows["workload"][-1][1] = self.history.now()
        return [repr(r) for r in results if isinstance(r, BaseException)]

    async def _client_loop(self, name: str) -> None:
        client = self.clients[name]
        rng = random.Random(f"{name}-{self.rng.random()}")
        n = 0
        while self._running:
            room = rng.choice(self.membership[name])
            text = f"{name}-{n}"
            n += 1
            t = self.history.now()
            try:
                txn = str(await client.send(room, text, wait=False))
            except ClientError as exc:  # refused locally: never queued
                op = self.history.invoke(name, room, f"local-{n}", text, t)
                op.update(outcome="fail", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            op = self.history.invoke(name, room, txn, text, t)
            try:
                ack = await client.wait_ack(txn, timeout=self.ack_timeout)
            except RequestTimeout:
                op["outcome"] = "ambiguous"
                op["t_timeout"] = self.history.now()
            except ServerRefused as exc:
                op["outcome"] = "fail"
                op["error"] = exc.code
            except ClientError as exc:  # not expected: the outcome is unknown
                op["outcome"] = "ambiguous"
                op["t_timeout"] = self.history.now()
                op["error"] = repr(exc)
            else:
                op["outcome"] = "ok"
                op["duplicate"] = bool(ack.duplicate)
                if op["seq"] is None:
                    op["seq"], op["t_ack"] = ack.seq, self.history.now()
            await asyncio.sleep(rng.uniform(*self.interval))

    # --- the final drain ------------------------------------------------------------
    async def drain(self, timeout: float = 90.0) -> dict[str, Any]:
        """All faults healed: wait until every outbox is empty, then send one
        marker per room and wait until every member holds the room up to it
        (a member that missed something fetches the gap when the marker's
        push arrives). Returns what it saw; the checker judges."""
        t0 = self.history.now()
        info: dict[str, Any] = {"outboxes_empty": False, "converged": False}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout / 2):
                while any(c.pending() for c in self.clients.values()) or any(
                    c.status.state is not ConnState.LIVE for c in self.clients.values()
                ):
                    await asyncio.sleep(0.2)
                info["outboxes_empty"] = True
        info["outbox_s"] = round(self.history.now() - t0, 3)
        heads: dict[str, int] = {}
        for room, members in self.history.rooms.items():
            owner = members[0]
            text = f"{owner}-drain-{room}"
            t = self.history.now()
            try:
                txn = str(await self.clients[owner].send(room, text, wait=False))
                op = self.history.invoke(owner, room, txn, text, t)
                ack = await self.clients[owner].wait_ack(txn, timeout=30)
                op["outcome"] = "ok"
                if op["seq"] is None:
                    op["seq"], op["t_ack"] = ack.seq, self.history.now()
                heads[room] = ack.seq
            except ClientError as exc:
                info.setdefault("marker_errors", []).append(f"{room}: {exc}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout / 2):
                while not all(
                    self._has_up_to(member, room, head)
                    for room, head in heads.items()
                    for member in self.history.rooms[room]
                ):
                    await asyncio.sleep(0.2)
                info["converged"] = True
        info["drain_s"] = round(self.history.now() - t0, 3)
        for name, client in self.clients.items():
            self.history.final[name] = {
                room: [
                    [x.seq, x.sender, x.txn, x.text, x.error]
                    for x in client.cache.messages(room, limit=1_000_000, after=0)
                ]
                for room in self.membership[name]
            }
        info["outbox_left"] = {n: len(c.pending()) for n, c in self.clients.items() if c.pending()}
        return info

    def _has_up_to(self, member: str, room: str, head: int) -> bool:
        rows = self.clients[member].cache.messages(room, limit=1, before=head + 1)
        return bool(rows) and rows[0].seq >= head

    async def close(self) -> None:
        # A run cut short never called `stop`: the sending loops end before
        # their clients' caches close under them.
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.factory.close_all()
