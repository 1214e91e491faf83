"""Clients that came back with peer-to-peer messages, on the node's
dashboard: `/api/state` carries the node's counters (`peer_returns`: the
announcements that reported messages exchanged peer to peer, and how many),
and the page, in a real headless Chromium, shows them over the connection
table as they grow."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

from support.raw import RawClient
from support.servers import ServerProcess

if TYPE_CHECKING:
    from .conftest import Chromium

LINE = "document.getElementById('peer-returns')"


def come_back(server: ServerProcess, user: str, peer_messages: int) -> None:
    """`user` registers and announces where it listens, reporting
    `peer_messages` exchanged peer to peer (as a client does on its return)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    identity = Identity.generate(user)
    client = RawClient(ctx, server.connect, identity)
    try:
        client.register()
        raw = p.encode_record(
            p.PeerRecord(
                user=user,
                transport_pub=identity.transport_pub,
                endpoints=["tcp://127.0.0.1:7000"],
                ts=int(time.time() * 1000),
            )
        )
        signed = m.SignedRecord(record=raw, sig=identity.sign(p.DOMAIN_RECORD + raw))
        reply = client.request(m.Announce(record=signed, peer_messages=peer_messages))
        assert isinstance(reply, m.Announced), reply
    finally:
        client.close()
        ctx.term()


async def get_json(server: ServerProcess, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}{path}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_api_state_carries_the_peer_returns(server: ServerProcess) -> None:
    state = await get_json(server, "/api/state")
    assert state["peer_returns"] == {"clients": 0, "messages": 0}
    await asyncio.to_thread(come_back, server, "alice", 3)
    await asyncio.to_thread(come_back, server, "bob", 4)
    await asyncio.to_thread(come_back, server, "carol", 0)  # nothing peer to peer: not counted
    state = await get_json(server, "/api/state")
    assert state["peer_returns"] == {"clients": 2, "messages": 7}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/metrics") as resp,
    ):
        metrics = await resp.text()
    assert "curvechat_peer_returns_total 2.0" in metrics
    assert "curvechat_peer_messages_total 7.0" in metrics


async def test_one_announcement_adds_a_bounded_count(server: ServerProcess) -> None:
    """A client names its own figure: one announcement of 2^31 used to add
    2^31 to the counter (five made it 1.07e10)."""
    await asyncio.to_thread(come_back, server, "mallory", 2**31)
    state = await get_json(server, "/api/state")
    assert state["peer_returns"] == {"clients": 1, "messages": 10_000}


async def test_dashboard_shows_clients_back_with_peer_messages(
    server: ServerProcess, browser: Chromium
) -> None:
    page = await browser.new_page()
    await page.goto(f"http://127.0.0.1:{server.http_port}/")

    async def shows(text: str, clients: int, messages: int) -> None:
        await page.wait_for(
            f"{LINE}.innerText === {text!r}"
            f" && {LINE}.dataset.clients === '{clients}'"
            f" && {LINE}.dataset.messages === '{messages}'",
            what=repr(text),
        )

    await shows("came back with peer-to-peer messages: 0 clients, 0 messages", 0, 0)
    await asyncio.to_thread(come_back, server, "alice", 1)
    await shows("came back with peer-to-peer messages: 1 client, 1 message", 1, 1)
    await asyncio.to_thread(come_back, server, "bob", 6)
    await asyncio.to_thread(come_back, server, "carol", 0)
    await shows("came back with peer-to-peer messages: 2 clients, 7 messages", 2, 7)
    # in the clients panel, over the connection table
    inside = await page.evaluate(
        f"{LINE}.closest('.card').contains(document.getElementById('connections'))"
    )
    assert inside
    # no script error, no refusal by the CSP (the favicon's 404 is expected)
    errors = [
        line
        for line in page.console()
        if line.startswith(("console.error", "exception", "security."))
    ]
    assert errors == [], errors
