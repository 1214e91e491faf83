"""The node's card in a real headless Chromium shows its clients and, once
the node drains (`POST /api/drain`), says "draining"."""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Chromium
from support.clients import ClientFactory
from support.servers import ServerProcess

CARD = "document.querySelector('#nodes .card.node')"


async def test_the_node_card_shows_clients_and_draining(
    server: ServerProcess, clients: ClientFactory, browser: Chromium
) -> None:
    await clients.make("alice", server.connect)
    await clients.make("bob", server.connect)
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{server.http_port}/")
    clients_stat = (
        f"[...{CARD}.querySelectorAll('.stat')].find(s => s.textContent.endsWith('clients'))"
    )
    await page.wait_for(f"{clients_stat}.querySelector('.v').textContent === '2'", what="2 clients")
    assert await page.evaluate(f"{CARD}.querySelector('.node-state').textContent") == "up"
    token = (server.data / "http.token").read_text().strip()
    post = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/api/drain",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    urllib.request.urlopen(post, timeout=5).close()
    await page.wait_for(
        f"{CARD}.querySelector('.node-state').textContent === 'draining'", what="draining"
    )
    assert "degraded" in await page.evaluate(f"{CARD}.className")
