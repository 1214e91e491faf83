"""The node's HTTP side: `/healthz` (the process is serving), `/readyz` (the
store answers), `/metrics` (Prometheus text format)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from curvechat.server.node import ChatNode
from curvechat.store import StoreUnavailable

READY_TIMEOUT_S = 2.0


def make_http_app(node: ChatNode) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node": node.node_name, "boot": node.boot})

    async def readyz(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(node.store.ping(), READY_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError) as exc:
            return web.json_response({"status": "store unavailable", "error": str(exc)}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(node.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_http(node: ChatNode, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(make_http_app(node), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:  # the real port when asked for port 0
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
    return runner, bound
