"""The dashboard's HTTP side, mounted on the node's own aiohttp app:

* `/` and `/static/…` — the page, its script and its style, package data
  served from memory (no CDN, no third-party code);
* `/api/nodes` — the nodes the page should show: this node, and in cluster
  mode the other nodes of the registry (each with the base URL of its API);
* `/api/state?since=MS&events_after=SEQ` — one node's status, connection
  table, the history samples newer than `since` and the events after `SEQ`.

The page polls `/api/state` of every node each second and says "node
unreachable" when a poll fails. This module reads the node only through a
`NodeProbe`; it must never import the server or the store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from curvechat.dashboard.events import EventLog
from curvechat.dashboard.history import MetricHistory, Sampler

STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
STATIC_FILES = ("index.html", "dashboard.js", "dashboard.css")


@dataclass
class NodeProbe:
    """What the dashboard may know about a node; the server fills it in."""

    name: str
    boot: str
    started_at: float  # Unix time
    registry: CollectorRegistry
    events: EventLog
    connections: Callable[[], list[dict[str, Any]]]
    info: Callable[[], dict[str, Any]] = field(default=dict)
    store_probe: Callable[[], Awaitable[None]] | None = None
    on_store_state: Callable[[bool], None] | None = None
    before_sample: Callable[[], None] | None = None
    peers: Callable[[], list[dict[str, Any]]] = field(default=list)
    """The other nodes of the cluster (name, url of their API, …), from the registry."""


def _load_static() -> dict[str, tuple[bytes, str]]:
    root = resources.files("curvechat.dashboard") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for name in STATIC_FILES:
        suffix = name[name.rfind(".") :]
        files[name] = ((root / name).read_bytes(), STATIC_TYPES[suffix])
    return files


class Dashboard:
    def __init__(self, probe: NodeProbe, history: MetricHistory | None = None) -> None:
        self.probe = probe
        self.history = history or MetricHistory()
        self.sampler = Sampler(
            probe.registry,
            self.history,
            probe.events,
            store_probe=probe.store_probe,
            on_store_state=probe.on_store_state,
            before_sample=probe.before_sample,
        )
        self._static = _load_static()

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/nodes", self.nodes)
        app.router.add_get("/api/state", self.state)
        app.cleanup_ctx.append(self._sampling)

    async def _sampling(self, app: web.Application) -> AsyncIterator[None]:
        self.sampler.start()
        yield
        await self.sampler.stop()

    def _file(self, name: str) -> web.Response:
        found = self._static.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def node_entry(self) -> dict[str, Any]:
        p = self.probe
        return {
            "name": p.name,
            "boot": p.boot,
            "url": "",  # this node's API, relative to the page
            "started_at": int(p.started_at * 1000),
            "uptime_s": max(0.0, time.time() - p.started_at),
            "store_ok": self.sampler.store_ok,
            "store_error": self.sampler.store_error,
            **p.info(),
        }

    async def nodes(self, request: web.Request) -> web.Response:
        # This node, then the other live nodes of the cluster's registry; the
        # page polls each one's /api/state itself (and keeps showing a node
        # that dropped out of the registry, as unreachable).
        return web.json_response(
            {"nodes": [self.node_entry(), *self.probe.peers()]},
            headers={"Cache-Control": "no-store"},
        )

    async def state(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            events_after = int(request.query.get("events_after", "0"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="since and events_after are integers") from exc
        return web.json_response(
            {
                "now": int(time.time() * 1000),
                "node": self.node_entry(),
                "interval_s": self.history.interval,
                "connections": self.probe.connections(),
                "history": self.history.since(since),
                "events": [e.to_json() for e in self.probe.events.after(events_after, 200)],
            },
            # The page of any node of the cluster polls every node's state.
            headers={"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"},
        )
