"""The monitor's page, in a real Chromium, while one of two nodes is rogue:
its samples hold booleans, then its `interval_s` is a 401-digit number.
The honest node goes down and comes back, and the page must say so each
time (before, a boolean reached the page and stopped its updates: a node
down went on being shown up). Then the page gets values that are not
numbers and a part of it that throws: the other parts go on."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from support.servers import free_port

if TYPE_CHECKING:
    from dashboard.conftest import Chromium

    from .conftest import MakeMonitor


class FakeNode:
    """A node's `/api/state`, answering as `mode` says: honest, bool (its
    samples' values are booleans), overflow (interval_s = 10**400) or down."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "honest"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = web.Application()
        app.router.add_get("/api/state", self.state)
        self.runner = web.AppRunner(app, access_log=None)

    async def state(self, request: web.Request) -> web.Response:
        if self.mode == "down":
            return web.Response(status=500)
        now = int(time.time() * 1000)
        value: Any = True if self.mode == "bool" else 3
        samples = [
            {"t": now - 1000 * i, "clients": value, "cpu_percent": value, "rss_bytes": value}
            for i in range(3, 0, -1)
        ]
        body = {"node": {"name": self.name, "boot": "b1"}, "interval_s": 1, "history": samples}
        text = json.dumps(body)
        if self.mode == "overflow":
            text = text.replace('"interval_s": 1', '"interval_s": 1' + "0" * 400)
        return web.Response(text=text, content_type="application/json")


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[FakeNode, FakeNode]]:
    pair = (FakeNode("honest"), FakeNode("rogue"))
    try:
        for node in pair:
            await node.runner.setup()
            await web.TCPSite(node.runner, "127.0.0.1", node.port).start()
        yield pair
    finally:
        for node in pair:
            await node.runner.cleanup()


def card(url: str, health: str) -> str:
    return f"document.querySelector('.node[data-node=\"{url}\"][data-health={health}]')"


# Values that are not numbers in the overview's samples, as a monitor that
# let them through would send; and the banner's drawing broken.
SPOIL_THE_PAGE = """(() => {
  const real = window.fetch;
  window.fetch = async (url, options) => {
    const resp = await real(url, options);
    if (!String(url).includes("api/overview")) return resp;
    const body = await resp.json();
    for (const n of body.nodes) {
      n.latest = {t: body.now, clients: true, cpu_percent: "5", rss_bytes: {}};
    }
    const headers = {"Content-Type": "application/json"};
    return new Response(JSON.stringify(body), {status: 200, headers});
  };
  renderBanner = () => { throw new Error("a broken part"); };
})()"""


async def test_a_rogue_node_does_not_stop_the_page(
    tmp_path: Path,
    browser: Chromium,
    monitors: MakeMonitor,
    nodes: tuple[FakeNode, FakeNode],
) -> None:
    honest, rogue = nodes
    monitor = monitors(tmp_path / "monitor", [honest.url, rogue.url]).start()
    page = await browser.new_page()
    await page.goto(monitor.link)
    await page.wait_for(f"{card(honest.url, 'up')} && {card(rogue.url, 'up')}", what="both up")

    rogue.mode = "bool"
    honest.mode = "down"
    await page.wait_for(f"{card(honest.url, 'down')} && {card(rogue.url, 'up')}", what="one down")
    stats = await page.evaluate(
        f"document.querySelector('.node[data-node=\"{rogue.url}\"] .node-stats').innerText"
    )
    assert "true" not in stats.lower(), stats

    rogue.mode = "overflow"  # a bad answer, not a traceback a second (the fixture checks)
    honest.mode = "honest"
    await page.wait_for(f"{card(honest.url, 'up')}", what="the honest node back")

    await page.evaluate(SPOIL_THE_PAGE)
    honest.mode = "down"
    await page.wait_for(f"{card(honest.url, 'down')}", what="the honest node down again")
    polls = int(await page.evaluate("document.body.dataset.polls"))
    await page.wait_for(f"document.body.dataset.polls >= {polls + 2}", what="still drawing")
    rogue_stats = await page.evaluate(
        f"document.querySelector('.node[data-node=\"{rogue.url}\"] .node-stats').innerText"
    )
    assert "true" not in rogue_stats.lower() and "–" in rogue_stats, rogue_stats
    assert any("a broken part" in line for line in page.console())
    assert "Traceback" not in monitor.log()
