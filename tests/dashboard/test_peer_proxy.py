"""The cluster view's proxy on its own, with in-process dashboards on loopback
ports: a node fetches another node's state for its page, with its token, only
for names in its registry, and says why when it cannot (wrong token, a URL
that reaches another node, nobody there)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from curvechat.dashboard.events import EventLog
from curvechat.dashboard.routes import Dashboard, NodeProbe
from curvechat.server.httpguard import HttpGuard

from support.servers import free_port

TOKEN = "shared-token-" + "x" * 30


class Site:
    def __init__(self, name: str, token: str, peers: list[dict[str, Any]]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.peers = peers
        probe = NodeProbe(
            name=name,
            boot=f"boot-{name}",
            started_at=time.time(),
            registry=CollectorRegistry(),
            events=EventLog(name),
            connections=list,
            peers=lambda: self.peers,
            peer_token=TOKEN,
        )
        self.app = web.Application()
        HttpGuard.for_bind("127.0.0.1", token, require_token=True).install(self.app)
        Dashboard(probe).mount(self.app)
        self.runner = web.AppRunner(self.app, access_log=None)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@pytest.fixture
async def sites() -> AsyncIterator[dict[str, Site]]:
    b = Site("b", TOKEN, [])
    c = Site("c", TOKEN, [])
    d = Site("d", "another-token-" + "y" * 30, [])
    dead = f"http://127.0.0.1:{free_port()}/"
    a = Site(
        "a",
        TOKEN,
        [
            {"name": "b", "url": b.url},
            {"name": "x/../y z", "url": c.url},  # registered with C's URL
            {"name": "d", "url": d.url},
            {"name": "gone", "url": dead},
            {"name": "ftp", "url": "file:///etc/passwd"},
            {"name": "..", "url": b.url},  # would resolve to api/state: not listed
        ],
    )
    started = [a, b, c, d]
    try:
        for site in started:
            await site.start()
        yield {s.name: s for s in started}
    finally:
        for site in started:
            await site.runner.cleanup()


async def peer(site: Site, name: str, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    url = f"{site.url}api/peers/{quote(name, safe='')}/state?since=0&events_after=0"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.json()


async def test_peer_state_through_this_node(sites: dict[str, Site]) -> None:
    a = sites["a"]
    status, body = await peer(a, "b")
    assert status == 200 and body["node"]["name"] == "b"

    status, body = await peer(a, "x/../y z")
    assert status == 502 and "reaches another node (c)" in body["error"]

    status, body = await peer(a, "d")
    assert status == 502 and "refused this node's token" in body["error"]

    status, body = await peer(a, "gone")
    assert status == 502 and body["error"].startswith("unreachable")

    for name in ("ftp", "nobody", "b/../b"):
        status, body = await peer(a, name)
        assert status == 404 and "not in this node's registry" in body["error"], name

    # the page's own token is checked before anything is fetched
    assert (await peer(a, "b", token="wrong-token-" + "z" * 30))[0] == 401

    async with (
        aiohttp.ClientSession() as http,
        http.get(a.url + "api/nodes", headers={"Authorization": f"Bearer {TOKEN}"}) as resp,
    ):
        listed = (await resp.json())["nodes"]
    assert [n["state"] for n in listed] == [
        "api/state",
        "api/peers/b/state",
        "api/peers/x%2F..%2Fy%20z/state",
        "api/peers/d/state",
        "api/peers/gone/state",
        "api/peers/ftp/state",
    ]
