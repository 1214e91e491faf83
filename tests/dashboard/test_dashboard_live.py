"""The live dashboard in a real headless Chromium: a node with traffic from
several clients, one client's connection killed and one cut and reconnected;
the page must draw the graphs, list the connections and the failures, keep
a screenshot for the README, and say "node unreachable" when the node dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Chromium
from support.clients import ClientFactory
from support.servers import ServerProcess

# The README's picture: written there only when asked
# (CURVECHAT_UPDATE_SCREENSHOTS=1), so that a test run never changes the tree.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


async def chatter(stop: asyncio.Event, senders: list, room: str) -> int:  # type: ignore[type-arg]
    """Steady traffic until `stop`: a few messages a second from each sender."""
    sent = 0
    while not stop.is_set():
        for client in senders:
            await client.send(room, f"message {sent}")
            sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)  # pacing, not waiting for a result
    return sent


def _rgb(hex_color: str) -> str:
    """`#e5534b` as getComputedStyle writes it: `rgb(229, 83, 75)`."""
    r, g, b = (int(hex_color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgb({r}, {g}, {b})"


async def test_dashboard_shows_traffic_connections_and_failures(
    server: ServerProcess, clients: ClientFactory, browser: Chromium, tmp_path: Path
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    carol, _ = await clients.make("carol", server.connect)
    dave, dave_events = await clients.make("dave", server.connect)
    erin, _ = await clients.make("erin", server.connect)
    await alice.create_room("ops", ["bob", "carol", "dave"])
    async with asyncio.timeout(20):  # bob may send once his engine knows the room
        while bob.cache.room("ops") is None:
            await asyncio.sleep(0.05)
    stop = asyncio.Event()
    traffic = asyncio.create_task(chatter(stop, [alice, bob], "ops"))
    try:
        # carol's connection is killed; dave's is cut and he comes back;
        # erin quits (a clean exit, with a goodbye: not a failure).
        await carol.conn.close(goodbye=False)
        await clients.close(carol)
        await clients.close(erin)
        dave.conn.drop("cut by the test")
        await dave_events.until(lambda: dave.conn.reconnects >= 1 and dave.conn.live)

        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.http_port}/")
        await page.wait_for(
            "document.querySelector('#chart-messages').dataset.points >= 10"
            " && document.querySelector('#chart-latency').dataset.points >= 4"
            " && document.querySelector('#chart-store').dataset.points >= 4"
            " && document.querySelector('#chart-clients').dataset.points >= 12",
            what="graphs with data",
        )
        rows = "#connections tr[data-user={}][data-state={}]"
        events = "#events li[data-kind={}][data-user={}]"
        present = [
            rows.format("alice", "live"),
            rows.format("bob", "live"),
            rows.format("dave", "live"),
            rows.format("carol", "disconnected"),
            rows.format("erin", "left"),
            events.format("client_disconnected", "carol"),
            events.format("client_reconnected", "dave"),
        ]
        await page.wait_for(
            " && ".join(f"document.querySelector('{selector}')" for selector in present),
            what="the connection table and the failure events",
        )
        dave_row = await page.evaluate(
            "document.querySelector('#connections tr[data-user=dave][data-state=live]').innerText"
        )
        assert "ms" in dave_row and dave_row.rstrip().endswith("1"), dave_row  # RTT; 1 reconnect
        # A clean exit is grey, a killed connection red; only the latter is "lost".
        colors = await page.evaluate(
            "[...document.querySelectorAll('#connections tr')].filter((r) => r.dataset.user)"
            ".map((r) => [r.dataset.user,"
            " getComputedStyle(r.querySelector('.state')).color]).sort()"
        )
        bad = await page.evaluate(
            "getComputedStyle(document.documentElement).getPropertyValue('--bad').trim()"
        )
        by_user = dict(colors)
        assert by_user["carol"] == _rgb(bad), colors
        assert by_user["erin"] != by_user["carol"] and by_user["erin"] != by_user["alice"], colors
        count = await page.evaluate("document.getElementById('conn-count').innerText")
        # lost: carol's, and dave's connection that was cut
        assert count == "3 live · 2 lost · 1 left", count
        assert not await page.evaluate("document.querySelector('#events li[data-user=erin]')"), (
            "a clean exit is not an event"
        )
        node = await page.evaluate("document.querySelector('.node').innerText")
        assert "up" in node and "uptime" in node.lower(), node
        overall = await page.evaluate("document.getElementById('overall').innerText")
        assert overall.startswith("healthy"), overall
        # it keeps updating (every second; at least every 2 s is required)
        polls = int(await page.evaluate("document.body.dataset.polls"))
        await page.wait_for(f"document.body.dataset.polls >= {polls + 2}", timeout=5)

        png = await page.screenshot()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
        shot = (
            DOCS_SCREENSHOT
            if os.environ.get("CURVECHAT_UPDATE_SCREENSHOTS")
            else (tmp_path / "dashboard.png")
        )
        shot.write_bytes(png)
    finally:
        stop.set()
        sent = await traffic
    assert sent > 0

    # The node dies (cleanly, so the fixture's checks still hold): the page
    # keeps running and says so.
    assert server.stop() == 0
    await page.wait_for(
        "document.getElementById('overall').innerText.includes('node unreachable')"
        " && document.querySelector('.node[data-up=false]')"
        " && document.querySelector('#events li[data-kind=node_down]')",
        what="the node shown as unreachable",
    )
