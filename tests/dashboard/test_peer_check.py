"""A peer that answers the cluster view with something that is not a node's
state: the node that serves the page checks the answer (with the monitor's
checks, `dashboard.statecheck`) and passes on only what the check rebuilt,
or an error for that peer; and the page, in a real Chromium, polls and
draws each node on its own, so that one peer's answer it cannot use stops
nothing else (before, the page stopped drawing altogether, this node's own
card included)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from curvechat.dashboard.events import EventLog
from curvechat.dashboard.routes import NODE_HEADER, Dashboard, NodeProbe
from curvechat.server.httpguard import HttpGuard

from support.servers import free_port

if TYPE_CHECKING:
    from .conftest import Chromium

TOKEN = "t" * 43
Answer = Callable[[int], Any]


def hostile(history: Any) -> Answer:
    return lambda now: {
        "now": now,
        "node": {"name": "rogue", "boot": "r1", "started_at": now - 5000},
        "interval_s": 1,
        "connections": [{"user": "eve", "rtt_ms": True}, "junk"],
        "events": [{"seq": 1, "t": now, "kind": "x", "detail": {"nested": 1}}, {"seq": "2"}],
        "peer_returns": {"clients": True, "messages": 3},
        "history": history,
    }


class Cluster:
    """Node A (its dashboard, in process) and a peer `rogue` in its registry
    whose `/api/state` answers `self.answer(now)`."""

    def __init__(self) -> None:
        self.answer: Answer = hostile([])
        self.port, self.rogue_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        probe = NodeProbe(
            name="a",
            boot="boot-a",
            started_at=time.time(),
            registry=CollectorRegistry(),
            events=EventLog("a"),
            connections=lambda: [{"user": "alice", "state": "live"}],
            peers=lambda: [{"name": "rogue", "url": f"http://127.0.0.1:{self.rogue_port}/"}],
        )
        app = web.Application()
        HttpGuard.for_bind("127.0.0.1", TOKEN).install(app)
        Dashboard(probe).mount(app)
        rogue = web.Application()
        rogue.router.add_get("/api/state", self._rogue_state)
        self.runners = [web.AppRunner(app, access_log=None), web.AppRunner(rogue, access_log=None)]

    async def _rogue_state(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.answer(int(time.time() * 1000)), headers={NODE_HEADER: "rogue"}
        )

    async def start(self) -> None:
        for runner, port in zip(self.runners, (self.port, self.rogue_port), strict=True):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    made = Cluster()
    try:
        await made.start()
        yield made
    finally:
        for runner in made.runners:
            await runner.cleanup()


async def test_a_peer_answer_is_checked_before_it_is_passed_on(cluster: Cluster) -> None:
    now = int(time.time() * 1000)
    cluster.answer = hostile([{"t": now, "clients": True, "cpu_percent": 5.0}, {"t": "x"}, 7])
    status, body = await cluster.get("api/peers/rogue/state?since=0&events_after=0")
    assert status == 200, body
    assert body["history"] == [{"t": now, "cpu_percent": 5.0}]
    assert body["connections"] == [{"user": "eve", "rtt_ms": True}]
    assert [e["seq"] for e in body["events"]] == [1] and "detail" not in body["events"][0]
    assert body["peer_returns"] == {"messages": 3}
    assert body["node"]["name"] == "rogue" and body["now"] > 0

    cluster.answer = hostile(None)
    status, body = await cluster.get("api/peers/rogue/state?since=0&events_after=0")
    assert status == 200 and body["history"] == [], body

    for answer, why in [
        (lambda now: [1, 2], "not a curvechat node's state"),
        (lambda now: {"node": {"name": "rogue"}, "history": []}, "names no node or boot id"),
    ]:
        cluster.answer = answer
        status, body = await cluster.get("api/peers/rogue/state?since=0&events_after=0")
        assert status == 502 and why in body["error"], body


async def test_the_monitor_can_ask_for_no_connection_table(cluster: Cluster) -> None:
    _, full = await cluster.get("api/state?since=0&events_after=0")
    assert [c["user"] for c in full["connections"]] == ["alice"]
    _, bare = await cluster.get("api/state?since=0&events_after=0&connections=0")
    assert bare["connections"] == []


# Answers the page's polls of the peer with `history: null`, as if the
# node had passed a peer's answer on unchecked.
BREAK_PEER_POLLS = """(() => {
  const real = window.fetch;
  window.fetch = (url, options) => String(url).includes("api/peers/")
    ? Promise.resolve(new Response(JSON.stringify({node: {name: "rogue", boot: "r1"},
        history: null, events: null, connections: null}),
        {status: 200, headers: {"Content-Type": "application/json"}}))
    : real(url, options);
})()"""


async def test_one_peer_the_page_cannot_use_stops_nothing_else(
    cluster: Cluster, browser: Chromium
) -> None:
    now = int(time.time() * 1000)
    cluster.answer = hostile([{"t": now - 1000, "clients": True, "cpu_percent": True}])
    page = await browser.new_page()
    await page.goto(cluster.url)
    await page.wait_for(
        "document.querySelectorAll('.node[data-up=true]').length === 2"
        " && document.body.dataset.polls >= 2",
        what="A and the rogue peer both up",
    )
    cluster.answer = hostile(None)
    polls = int(await page.evaluate("document.body.dataset.polls"))
    await page.wait_for(
        f"document.body.dataset.polls >= {polls + 2}"
        " && document.querySelectorAll('.node[data-up=true]').length === 2",
        what="the page going on with a peer answering history: null",
    )
    # what gets through to the page unchecked marks that peer only
    await page.evaluate(BREAK_PEER_POLLS)
    await page.wait_for(
        "document.querySelector('.node[data-node=rogue][data-up=false]')"
        " && document.querySelector('.node[data-node=a][data-up=true]')"
        " && document.querySelector('#connections tr[data-user=alice]')",
        what="the rogue peer shown unreachable, A still drawn",
    )
    card = await page.evaluate("document.querySelector('.node[data-node=rogue]').innerText")
    assert "cannot be shown" in card, card
    polls = int(await page.evaluate("document.body.dataset.polls"))
    await page.wait_for(f"document.body.dataset.polls >= {polls + 2}", what="still polling")
