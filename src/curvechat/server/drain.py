"""Draining a node before a restart: it takes no new connection and asks
the clients it has to move to another node, until none is left.

* While draining, `hello` is refused with `draining` (the node's other
  requests are served as before, so what a client has in flight is
  answered), and every connection is sent a `push_move`, again every
  TELL_EVERY_S while it stays. A client moves to the next node of its
  order (`client.servers`): its outbox resends what was not acked there,
  with the same txn ids, so nothing is lost or stored twice.
* In cluster mode the registry entry says `draining` (the cluster's
  keep-alive publishes it), and the other nodes leave the node out of the
  live nodes their welcomes name.
* `curvechat drain` (cli/drain.py) starts it and waits until no client is
  left. The HTTP side carries it: `GET /api/drain` (the state, behind the
  same guard as the rest of `/api/`), `POST /api/drain` (start) and
  `DELETE /api/drain` (stop draining), which always need the node's bearer
  token, on loopback too: only who can read the token file may drain.

It never closes a connection itself: a client that does not know
`push_move` stays until it leaves, and the drain reports it as left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from curvechat.server.httpguard import HttpGuard
from curvechat.server.moving import MoveAsker
from curvechat.server.node import ChatNode
from curvechat.tasks import cancel_and_wait

log = logging.getLogger("curvechat.server")

TELL_EVERY_S = 5.0
"""A connection still here is asked again this often (a push may be lost)."""
LOOP_S = 0.25


class Drain:
    def __init__(self, node: ChatNode) -> None:
        self.node = node
        self.since_ms: int | None = None
        self.drained_ms: int | None = None  # when the last client left
        self._mover = MoveAsker(node, "draining", TELL_EVERY_S)
        self._present: set[bytes] = set()  # the connections the drain found
        self._task: asyncio.Task[None] | None = None

    def clients(self) -> int:
        """Connections still here (not gone); while draining, of those the
        drain found (a connection that came later was refused its hello, and
        is only on its way out)."""
        sessions = self.node.sessions
        if not self.node.draining:
            return sum(1 for s in sessions.values() if s.gone is None)
        return sum(1 for r in self._present if r in sessions and sessions[r].gone is None)

    def state(self) -> dict[str, Any]:
        return {
            "node": self.node.node_name,
            "draining": self.node.draining,
            "since_ms": self.since_ms,
            "clients": self.clients(),
            "drained_ms": self.drained_ms,
        }

    def start(self) -> None:
        if self.node.draining:
            return
        self.node.draining = True
        self.since_ms, self.drained_ms = int(time.time() * 1000), None
        self._mover.reset()
        self._present = set(self.node.sessions)
        log.info("draining: asking %d connection(s) to move", self.clients())
        self.node.events.add(
            "node_draining",
            f"node {self.node.node_name} is draining: {self.clients()} client(s) asked to move",
            level="warning",
        )
        self._task = asyncio.create_task(self._tell(), name="drain")

    async def stop(self) -> None:
        """Stop draining: the node takes new connections again."""
        if not self.node.draining:
            return
        self.node.draining = False
        self.since_ms = self.drained_ms = None
        await self.close()
        self.node.events.add("node_undrained", f"node {self.node.node_name} takes clients again")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _tell(self) -> None:
        while True:
            self._mover.ask()
            self._present &= self.node.sessions.keys()
            if self.drained_ms is None and self.clients() == 0:
                self.drained_ms = int(time.time() * 1000)
                took = (self.drained_ms - (self.since_ms or self.drained_ms)) / 1000
                log.info("drained: no client left after %.1f s", took)
                self.node.events.add(
                    "node_drained",
                    f"node {self.node.node_name} drained: no client left after {took:.1f} s",
                )
            await asyncio.sleep(LOOP_S)


def mount_drain(app: web.Application, node: ChatNode, guard: HttpGuard) -> Drain:
    """The drain's routes on the node's HTTP app (module docstring)."""
    drain = Drain(node)

    def refuse(request: web.Request) -> web.Response | None:
        if request.query:
            return _error(400, "bad_argument", "this endpoint takes no parameters")
        if request.method != "GET" and not guard.authorised(request.headers.get("Authorization")):
            return _error(
                401,
                "unauthorized",
                "draining needs the node's token: send 'Authorization: Bearer <token>'",
            )
        return None

    async def get(request: web.Request) -> web.Response:
        return refuse(request) or _state(drain)

    async def post(request: web.Request) -> web.Response:
        refused = refuse(request)
        if refused is not None:
            return refused
        drain.start()
        return _state(drain)

    async def delete(request: web.Request) -> web.Response:
        refused = refuse(request)
        if refused is not None:
            return refused
        await drain.stop()
        return _state(drain)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        yield
        await drain.close()

    app.router.add_get("/api/drain", get)
    app.router.add_post("/api/drain", post)
    app.router.add_delete("/api/drain", delete)
    app.cleanup_ctx.append(lifetime)
    return drain


def _state(drain: Drain) -> web.Response:
    return web.json_response(drain.state(), headers={"Cache-Control": "no-store"})


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)
