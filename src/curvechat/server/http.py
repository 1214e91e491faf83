"""The node's HTTP side: `/healthz` (the process is serving), `/readyz` (the
store answers), `/metrics` (Prometheus text format) and the live dashboard
(`/`, `/static/…`, `/api/…`, see `curvechat.dashboard.routes`) and the
drain (`/api/drain`, `curvechat.server.drain`), behind the
Host check, the bearer token and the security headers of
`curvechat.server.httpguard`.

It runs on the node's own event loop and must never block it: the store is
only probed with a timeout, and everything else is read from memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from curvechat.dashboard.routes import Dashboard, NodeProbe
from curvechat.server.drain import mount_drain
from curvechat.server.httpguard import HttpGuard, listen
from curvechat.server.httpload import IDLE_S, LoopBudget, server_logger
from curvechat.server.node import ChatNode, Session
from curvechat.store import StoreUnavailable

READY_TIMEOUT_S = 2.0
READY_REUSE_S = 1.0  # a /readyz answer is reused this long (anyone may ask)
LOST_SHOWN_S = 600.0  # lost connections stay in the table this long


def refresh_metrics(node: ChatNode) -> None:
    """Bring the metrics that are read from elsewhere up to date before a
    scrape or a sample: the outbox depths the clients reported, and the
    store's own group-commit counters (if it keeps them)."""
    node.metrics.client_outbox.set(sum(s.outbox for s in node.sessions.values()))
    commits = getattr(node.store, "commits", None)
    messages = getattr(node.store, "committed_messages", None)
    if isinstance(commits, int) and isinstance(messages, int):
        node.metrics.note_store_commits(commits, messages)
    retries = getattr(node.store, "cas_retries", None)
    if isinstance(retries, int):
        node.metrics.note_cas_retries(retries)


def counter_total(counter: Counter) -> int:
    """The value of an unlabelled counter (its `_total` sample)."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                return int(sample.value)
    return 0


def connection_row(node: ChatNode, sess: Session) -> dict[str, Any]:
    return {
        "user": sess.user,
        "key": sess.transport_key[:8],
        "node": node.node_name,
        "client": sess.client,
        "connected_since": sess.connected_ms,
        "last_heartbeat": sess.last_ping_ms,
        "rtt_ms": sess.rtt_ms,
        "reconnects": sess.reconnects,
        "outbox": sess.outbox,
        "state": sess.gone or ("lost" if sess.dropped_ms is not None else "live"),
        "gone_since": sess.gone_ms or sess.dropped_ms,
    }


def node_probe(node: ChatNode, peer_token: str = "") -> NodeProbe:
    def connections() -> list[dict[str, Any]]:
        cutoff = int((time.time() - LOST_SHOWN_S) * 1000)
        lost = [
            s
            for s in node.lost_sessions
            if (s.dropped_ms or 0) >= cutoff and node.sessions.get(s.routing_id) is not s
        ]
        rows = [connection_row(node, s) for s in [*node.sessions.values(), *lost]]
        return sorted(rows, key=lambda r: (r["state"] != "live", r["user"] or "", r["key"]))

    def info() -> dict[str, Any]:
        return {
            # What clients dial (--advertise), and the address bound when it differs.
            "endpoint": node.dial or node.endpoint,
            "bound": node.endpoint,
            "etcd_quota": node.etcd_quota(),
            "draining": node.draining,
        }

    def on_store_state(ok: bool) -> None:
        node.metrics.store_up.set(1 if ok else 0)

    def peer_returns() -> dict[str, int]:
        # The counters of the announce handler (docs/protocol.md section 17).
        return {
            "clients": counter_total(node.metrics.peer_returns),
            "messages": counter_total(node.metrics.peer_messages),
        }

    return NodeProbe(
        name=node.node_name,
        boot=node.boot,
        started_at=node.started_at,
        registry=node.metrics.registry,
        events=node.events,
        connections=connections,
        info=info,
        store_probe=node.store.ping,
        on_store_state=on_store_state,
        before_sample=lambda: refresh_metrics(node),
        peers=lambda: node.peer_nodes,
        peer_token=peer_token,
        peer_returns=peer_returns,
    )


def make_http_app(node: ChatNode, guard: HttpGuard, *, dashboard: bool = True) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node": node.node_name, "boot": node.boot})

    ready: list[Any] = [-READY_REUSE_S, None]  # when the store was last probed, why it failed
    probing = asyncio.Lock()

    async def readyz(request: web.Request) -> web.Response:
        # Anyone may ask (no token), and on etcd a probe is a write: one probe
        # at a time, its answer reused for READY_REUSE_S.
        async with probing:
            if time.monotonic() - ready[0] >= READY_REUSE_S:
                try:
                    async with asyncio.timeout(READY_TIMEOUT_S):
                        await node.store.ping()
                    ready[1] = None
                except StoreUnavailable:
                    ready[1] = "the store refused or failed the probe"
                except TimeoutError:
                    ready[1] = f"the store did not answer within {READY_TIMEOUT_S:g} s"
                ready[0] = time.monotonic()
            error = ready[1]
        if error is not None:
            return web.json_response({"status": "store unavailable", "error": error}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        refresh_metrics(node)
        body = generate_latest(node.metrics.registry) + generate_latest(
            node.metrics.scrape_registry
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    LoopBudget().install(app)  # outermost: every answer is paid for, refusals too
    guard.install(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    mount_drain(app, node, guard)
    if dashboard:
        Dashboard(node_probe(node, guard.token)).mount(app)
    return app


async def start_http(
    node: ChatNode, host: str, port: int, guard: HttpGuard
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(
        make_http_app(node, guard),
        access_log=None,
        keepalive_timeout=IDLE_S,
        logger=server_logger,
    )
    await runner.setup()
    try:
        return runner, await listen(runner, host, port)
    except BaseException:
        await runner.cleanup()  # the app's sessions too: nothing left open
        raise
