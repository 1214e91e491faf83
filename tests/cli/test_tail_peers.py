"""`curvechat tail --peers` (a real process) keeps a room going peer to peer
when the server is killed: a member's message comes straight from that
member, marked as not on the server yet; once the server is back it is
shown again in its durable place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from curvechat.client import events as ev
from curvechat.client.peer.shell import PeerOptions
from curvechat.client.state import ConnState

from support.clients import ClientFactory


async def test_tail_with_peers_shows_a_message_while_the_server_is_down(
    cli: Callable[[str], Any], tails: Callable[..., Any], clients: ClientFactory
) -> None:
    alice = cli("alice")
    server = alice.server
    await asyncio.to_thread(alice.run, "init", "--user", "alice")
    bob, events = await clients.make(
        "bob", server.connect, peers=PeerOptions(bind="tcp://127.0.0.1:*", interval=0.2)
    )
    await asyncio.to_thread(alice.run, "create", "p2p", "--members", "bob")
    await events.until(lambda: bool(bob.core.held("p2p")))
    tail = tails(alice, "p2p", "--peers")
    await asyncio.to_thread(tail.err.until, "following p2p")
    assert bob.peer is not None
    for _ in range(50):  # the tail announced itself after its sync
        await bob.peer.publish()
        if [r.user for r in bob.peer.core.peers()] == ["alice"]:
            break
        await asyncio.sleep(0.2)
    assert [r.user for r in bob.peer.core.peers()] == ["alice"]

    server.kill()
    await events.until(lambda: bob.status.state is not ConnState.LIVE)
    await bob.send("p2p", "the server is down, still here", wait=False)
    line = await asyncio.to_thread(tail.out.until, "still here")
    assert line == "bob: the server is down, still here  (peer-to-peer, not on the server yet)"
    await events.until(lambda: ev.PeerStatus(True, 1) in events.of(ev.PeerStatus))

    server.start()
    line = await asyncio.to_thread(tail.out.until, "still here", 60)
    assert "peer-to-peer" not in line and "bob" in line
    assert tail.stop() == 0
