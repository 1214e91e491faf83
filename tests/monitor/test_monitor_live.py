"""`curvechat monitor` in a real headless Chromium, watching two real nodes
(which need the token: the monitor sends the nodes' token, and its own page
needs the monitor's token). While the page is open, one node is killed
with -9, then the other stopped, then both started again: the page must
show the first down, then all nodes down (and keep working), then both
back with the outage and its duration, and the graphs must keep the
samples from before the restart. Then the monitor itself restarts: the
page says it is unreachable meanwhile, and afterwards still shows the
history and the outage (kept in the monitor's data dir).

Screenshots go to the test's tmp dir; with CURVECHAT_UPDATE_SCREENSHOTS=1
the last one also goes to docs/monitor.png (the README's picture)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from support.clients import ClientFactory
from support.servers import ServerProcess

if TYPE_CHECKING:
    from dashboard.conftest import Chromium, Page

    from .conftest import MakeMonitor

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "monitor.png"


def ms() -> int:
    return int(time.time() * 1000)


async def chatter(stop: asyncio.Event, senders: list, room: str) -> None:  # type: ignore[type-arg]
    """A few messages a second until `stop`, for the graphs."""
    sent = 0
    while not stop.is_set():
        for client in senders:
            await client.send(room, f"message {sent}")
            sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)  # pacing, not waiting for a result


async def shot(page: Page, path: Path) -> None:
    png = await page.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    path.write_bytes(png)


def node_card(url: str, health: str) -> str:
    return f"document.querySelector('.node[data-node=\"{url}\"][data-health={health}]')"


def pill_has(text: str) -> str:
    return f"document.getElementById('overall').innerText.includes({text!r})"


async def test_monitor_watches_nodes_die_and_come_back(
    tmp_path: Path,
    browser: Chromium,
    clients: ClientFactory,
    monitors: MakeMonitor,
) -> None:
    shared = tmp_path / "nodes-http.token"  # made by a's first start, given to b
    secure = ("--http-require-token", "--http-token-file", str(shared))
    a = ServerProcess(tmp_path / "a", extra_args=secure).start()
    b = ServerProcess(tmp_path / "b", extra_args=secure).start()
    a_url, b_url = (f"http://127.0.0.1:{n.http_port}" for n in (a, b))
    monitor = monitors(
        tmp_path / "monitor",
        [a_url, b_url],
        ("--node-token-file", str(shared), "--http-require-token"),
    ).start()
    assert "#token=" in monitor.link  # its own token, printed once
    stop = asyncio.Event()
    traffic: asyncio.Task[None] | None = None
    try:
        alice, _ = await clients.make("alice", a.connect)
        await clients.make("bob", a.connect)
        await alice.create_room("ops", ["bob"])
        traffic = asyncio.create_task(chatter(stop, [alice], "ops"))

        page = await browser.new_page()
        await page.goto(monitor.link)
        await page.wait_for(
            f"{node_card(a_url, 'up')} && {node_card(b_url, 'up')} && {pill_has('all 2 nodes up')}"
            " && document.querySelector('#chart-messages').dataset.points >= 8"
            " && document.querySelector('#chart-process').dataset.points >= 8",
            what="both nodes up, with graphs",
        )
        assert await page.evaluate("location.hash") == ""  # the token left the address bar
        await shot(page, tmp_path / "monitor-up.png")

        # b dies (kill -9): shown down, with an outage that is still going on
        b.kill()
        killed = ms()
        await page.wait_for(
            f"{node_card(b_url, 'down')} && {node_card(a_url, 'up')}"
            f" && {pill_has('1 of 2 nodes down since')}"
            f" && document.querySelector('#outages tr[data-node=\"{b_url}\"][data-ongoing=true]')"
            f" && document.querySelector('#events li[data-kind=node_down][data-node=\"{b_url}\"]')",
            what="b shown down",
        )
        await shot(page, tmp_path / "monitor-one-down.png")

        # a stops too: every node is down; the page says so and keeps its graphs
        stop.set()
        await traffic
        await clients.close_all()
        assert a.stop() == 0
        await page.wait_for(
            f"{pill_has('all nodes down since')}"
            " && document.getElementById('banner').dataset.kind === 'bad'"
            " && document.getElementById('banner').innerText.includes('All 2 nodes are down since')"
            f" && {node_card(a_url, 'down')}",
            what="all nodes shown down",
        )
        assert int(await page.evaluate("document.querySelector('#chart-process').dataset.points"))
        await shot(page, tmp_path / "monitor-all-down.png")
        polls = int(await page.evaluate("document.body.dataset.polls"))
        await page.wait_for(f"document.body.dataset.polls >= {polls + 2}", what="still polling")

        # both come back (new processes, same ports and data)
        b.start()
        b_back = ms()  # b answers from about now (its HTTP side is up before it prints)
        a.start()
        back = ms()
        await page.wait_for(
            f"{node_card(a_url, 'up')} && {node_card(b_url, 'up')} && {pill_has('all 2 nodes up')}"
            f" && document.querySelector('#outages tr[data-node=\"{b_url}\"][data-ongoing=false]')"
            f" && document.querySelector('#events li[data-kind=node_up][data-node=\"{b_url}\"]')",
            what="both nodes back, the outage closed",
        )
        row = f'#outages tr[data-node="{b_url}"][data-ongoing=false]'
        outage_ms = int(await page.evaluate(f"document.querySelector('{row}').dataset.durationMs"))
        # from the first failed poll (at most a poll after the kill) to the first answer
        assert b_back - killed - 2000 <= outage_ms <= ms() - killed, (outage_ms, b_back - killed)
        text = await page.evaluate(f"document.querySelector('{row}').innerText")
        assert "came back restarted" in text, text
        up_event = await page.evaluate(
            f"document.querySelector('#events li[data-kind=node_up][data-node=\"{b_url}\"]')"
            ".innerText"
        )
        assert "after" in up_event and "down" in up_event, up_event

        # the graphs kept b's samples from before the kill, and go on after it
        b_samples = f"page.nodes.get('{b_url}').history"
        await page.wait_for(
            f"{b_samples}.some((s) => s.t > {back})", what="b's samples after its restart"
        )
        assert await page.evaluate(f"{b_samples}[0].t") < killed - 2000
        await shot(page, tmp_path / "monitor-back.png")
        if os.environ.get("CURVECHAT_UPDATE_SCREENSHOTS"):
            await shot(page, DOCS_SCREENSHOT)

        # the monitor restarts: the page says it is gone, then shows what it kept
        assert monitor.stop() == 0
        await page.wait_for(pill_has("monitor unreachable"), what="the monitor shown gone")
        monitor.start()
        await page.wait_for(
            f"{pill_has('all 2 nodes up')}"
            f" && document.querySelector('#outages tr[data-node=\"{b_url}\"][data-ongoing=false]')"
            " && document.querySelector('#events li[data-kind=monitor_started]')"
            f" && {b_samples}.length && {b_samples}[0].t < {killed - 2000}",
            what="the history and the outage after the monitor's restart",
        )
        # no script error, no refusal by the CSP (failed loads while the
        # monitor was stopped are expected)
        errors = [
            line
            for line in page.console()
            if line.startswith(("console.error", "exception", "security."))
        ]
        assert errors == [], errors
    finally:
        stop.set()
        if traffic is not None:
            with contextlib.suppress(Exception):
                await traffic
        await clients.close_all()
        for node in (a, b):
            node.stop()
    for node in (a, b):
        assert "Traceback" not in node.log(), node.log()[-3000:]
