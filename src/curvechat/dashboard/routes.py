"""The dashboard's HTTP side, mounted on the node's own aiohttp app:

* `/` and `/static/…` — the page, its script and its style, package data
  served from memory (no CDN, no third-party code, no inline script);
* `/api/nodes` — the nodes the page should show: this node, and in cluster
  mode the other nodes of the registry, each with the path *on this node*
  to poll for its state;
* `/api/state?since=MS&events_after=SEQ` — this node's status, connection
  table (none with `connections=0`), the count of clients that came back
  with peer-to-peer messages, the history samples newer than `since` and
  the events after `SEQ`;
* `/api/peers/{name}/state?since=…&events_after=…` — the same for another
  node of the registry, fetched by this node from that node's `/api/state`
  with the bearer token (`NodeProbe.peer_token`), checked
  (`statecheck.check_state`: an answer that is not a node's state is an
  error for that node) and passed on as the check rebuilt it.

The page polls each node's state once a second through the node that served
it, so it only ever talks to its own origin: no answer needs CORS, and the
browser never learns where the other nodes are or holds a token for them. A
node can only be asked about names in its registry (never about a URL the
page chose). This module reads the node only through a `NodeProbe`; it must
never import the server or the store. Who may call these routes (Host check,
token) is decided in front of them, by the server's HTTP guard.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from curvechat.dashboard import statecheck
from curvechat.dashboard.events import EventLog
from curvechat.dashboard.history import MetricHistory, Sampler

STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
STATIC_FILES = ("index.html", "shared.js", "dashboard.js", "dashboard.css")
PEER_TIMEOUT_S = 2.0  # the page gives up on a poll after 2.5 s
# A peer's first answer holds its whole history (2.1 MB at most, see
# monitor/poller.py MAX_BYTES) and its connection table (about 300 bytes a
# connection: 3 MB for 10,000 clients); later ones only what is new. The
# node decodes and checks it (in a worker thread when large).
PEER_MAX_BYTES = 16 * 1024 * 1024
NODE_HEADER = "X-Curvechat-Node"  # on /api/state: whose state it is (URL-quoted)


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
    peer_token: str = ""
    """The bearer token this node sends with its requests to the other nodes
    (every node of a cluster is given the same one)."""
    peer_returns: Callable[[], dict[str, int]] = field(default=dict)
    """Since the node started: clients that came back from an outage with
    messages exchanged peer to peer (`clients`), and those messages
    (`messages`)."""


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
        self._client: aiohttp.ClientSession | None = None

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/nodes", self.nodes)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/peers/{name}/state", self.peer_state)
        app.cleanup_ctx.append(self._sampling)

    async def _sampling(self, app: web.Application) -> AsyncIterator[None]:
        self.sampler.start()
        self._client = aiohttp.ClientSession(
            # Nodes answer uncompressed: a compressed answer could unpack to far
            # more than the bytes PEER_MAX_BYTES counts.
            timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S),
            auto_decompress=False,
            headers={"Accept-Encoding": "identity"},
        )
        yield
        await self._client.close()
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
            "state": "api/state",  # where the page polls it, relative to the page
            "started_at": int(p.started_at * 1000),
            "uptime_s": max(0.0, time.time() - p.started_at),
            "store_ok": self.sampler.store_ok,
            "store_error": self.sampler.store_error,
            **p.info(),
        }

    async def nodes(self, request: web.Request) -> web.Response:
        # This node, then the other live nodes of the cluster's registry; the
        # page polls each one through this node (and keeps showing a node
        # that dropped out of the registry, as unreachable).
        peers = [
            {**peer, "state": f"api/peers/{quote(str(peer['name']), safe='')}/state"}
            for peer in self.probe.peers()
            if str(peer.get("name", "")) not in ("", ".", "..")  # not a path segment
        ]
        return web.json_response(
            {"nodes": [self.node_entry(), *peers]}, headers={"Cache-Control": "no-store"}
        )

    @staticmethod
    def _cursor(request: web.Request) -> tuple[int, int]:
        try:
            return int(request.query.get("since", "0")), int(request.query.get("events_after", "0"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text="since and events_after are integers") from exc

    async def peer_state(self, request: web.Request) -> web.Response:
        """Another node's `/api/state`, fetched by this node with the token."""
        name = request.match_info["name"]
        since, events_after = self._cursor(request)
        peer = next((p for p in self.probe.peers() if p.get("name") == name), None)
        url = str(peer.get("url") or "") if peer else ""
        if not url.startswith(("http://", "https://")):
            return _peer_error(404, f"{name} is not in this node's registry")
        headers = {"Accept": "application/json"}
        if self.probe.peer_token:
            headers["Authorization"] = f"Bearer {self.probe.peer_token}"
        assert self._client is not None
        try:
            async with self._client.get(
                url.rstrip("/") + "/api/state",
                params={"since": str(since), "events_after": str(events_after)},
                headers=headers,
                allow_redirects=False,
            ) as resp:
                if resp.status == 401:
                    return _peer_error(
                        502,
                        "it refused this node's token (every node of a cluster needs"
                        " the same token: --http-token-file)",
                    )
                if resp.status == 421:
                    return _peer_error(
                        502, f"it does not answer to the host of its registered URL {url}"
                    )
                if resp.status != 200:
                    return _peer_error(502, f"it answered HTTP {resp.status}")
                answered = resp.headers.get(NODE_HEADER, "")
                if answered != quote(name, safe=""):
                    # e.g. every node registered http://127.0.0.1:7780/
                    return _peer_error(
                        502,
                        f"its registered URL {url} reaches another node"
                        f" ({unquote(answered)[:100] or 'not a curvechat node'}):"
                        " bind --http to an address the other nodes can reach",
                    )
                if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
                    return _peer_error(502, "its answer is compressed (a node's is not)")
                body = bytearray()
                async for chunk in resp.content.iter_any():
                    body += chunk
                    if len(body) > PEER_MAX_BYTES:
                        return _peer_error(502, "its answer is too large")
        except TimeoutError:
            return _peer_error(504, f"no answer within {PEER_TIMEOUT_S:g} s")
        except aiohttp.ClientError as exc:
            return _peer_error(502, f"unreachable ({type(exc).__name__})")
        try:
            checked = await statecheck.load(bytes(body), _checked_json)
        except statecheck.BadAnswer as exc:
            return _peer_error(502, str(exc))
        return web.Response(
            body=checked, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def state(self, request: web.Request) -> web.Response:
        since, events_after = self._cursor(request)
        table = request.query.get("connections") != "0"  # the monitor asks for none
        return web.json_response(
            {
                "now": int(time.time() * 1000),
                "node": self.node_entry(),
                "interval_s": self.history.interval,
                "connections": self.probe.connections() if table else [],
                "peer_returns": {"clients": 0, "messages": 0, **self.probe.peer_returns()},
                "history": self.history.since(since),
                "events": [e.to_json() for e in self.probe.events.after(events_after, 200)],
            },
            # Same origin only: other nodes' pages get it through their node.
            headers={"Cache-Control": "no-store", NODE_HEADER: quote(self.probe.name, safe="")},
        )


def _checked_json(document: Any) -> bytes:
    return json.dumps(statecheck.check_state(document), separators=(",", ":")).encode()


def _peer_error(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status, headers={"Cache-Control": "no-store"})
