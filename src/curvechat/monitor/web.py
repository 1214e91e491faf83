"""The monitor's HTTP side, behind the same guard as a node's
(`curvechat.server.httpguard`: Host check, bearer token, security headers):

* `/`, `/static/…` — the page: its own HTML, script and style, plus the
  code and style it shares with the node's dashboard (`shared.js`,
  `dashboard.css` from `curvechat.dashboard`), package data served from
  memory, no third-party code;
* `/api/overview` — the nodes, their state, the overall state, the outage
  timeline and the monitor's own state (`MonitorView.overview`);
* `/api/history?since=MS` — every node's samples stamped after `since`;
* `/healthz` — the monitor serves.

It only reads the `MonitorView`: everything it answers comes from memory,
so it answers the same whether the nodes are up or down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from curvechat.monitor.view import MonitorView
from curvechat.server.httpguard import HttpGuard

STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
STATIC_FILES = {  # name -> the package that holds it
    "index.html": "curvechat.monitor",
    "monitor.js": "curvechat.monitor",
    "monitor.css": "curvechat.monitor",
    "shared.js": "curvechat.dashboard",
    "dashboard.css": "curvechat.dashboard",
}
NO_STORE = {"Cache-Control": "no-store"}


def load_static() -> dict[str, tuple[bytes, str]]:
    files = {}
    for name, package in STATIC_FILES.items():
        body = (resources.files(package) / "static" / name).read_bytes()
        files[name] = (body, STATIC_TYPES[name[name.rfind(".") :]])
    return files


def _now() -> int:
    return int(time.time() * 1000)


class MonitorWeb:
    def __init__(self, view: MonitorView, about: Callable[[], dict[str, Any]]) -> None:
        self.view = view
        self.about = about  # the monitor itself: boot id, start, where nodes come from
        self._static = load_static()

    def app(self, guard: HttpGuard) -> web.Application:
        app = web.Application()
        guard.install(app)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/api/overview", self.overview)
        app.router.add_get("/api/history", self.history)
        return app

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

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "boot": self.about().get("boot", "")})

    async def overview(self, request: web.Request) -> web.Response:
        body = self.view.overview(_now())
        body["monitor"] = self.about()
        return web.json_response(body, headers=NO_STORE)

    async def history(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="since is an integer (Unix ms)") from exc
        return web.json_response(
            {"now": _now(), "nodes": self.view.history_since(since)}, headers=NO_STORE
        )
