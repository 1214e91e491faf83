"""The terminal client in peer-to-peer mode: with the server killed, a
member's message comes straight from that member, marked as not on the
server yet, and the status line says "server unreachable · peer-to-peer
with 1 member"; once the server is back the message takes its place."""

from __future__ import annotations

from pathlib import Path

from curvechat.client.peer.shell import PeerOptions
from curvechat.client.state import ConnState
from curvechat.tui.widgets.status import StatusLine

from .conftest import Kit, ready, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess

LOOPBACK = PeerOptions(bind="tcp://127.0.0.1:*", interval=0.2, timeout=1.0)
MARK = "◌ peer-to-peer · not on the server yet"


async def test_status_line_and_provisional_messages(
    tmp_path: Path, kit: Kit, clients: ClientFactory
) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        app = kit.app("alice", server.connect, peers=LOOPBACK)
        async with app.run_test(size=(100, 24)) as pilot:
            await ready(pilot, app)
            bob, _ = await clients.make("bob", server.connect, peers=LOOPBACK)
            await bob.create_room("p2p", ["alice"])
            await until(pilot, lambda: app.chat.current == "p2p", "alice in #p2p")
            alice = app.client
            assert alice.peer is not None and bob.peer is not None
            for _ in range(50):
                await bob.peer.publish()
                await alice.peer.publish()
                if alice.peer.core.peers() and bob.peer.core.peers():
                    break
                await pilot.pause(0.1)
            server.kill()
            await until(pilot, lambda: bob.status.state is not ConnState.LIVE, "bob offline")
            await bob.send("p2p", "hello without a server", wait=False)
            await until(pilot, lambda: MARK in shown(app), "the provisional message")
            assert f"bob: hello without a server  {MARK}" in shown(app)
            status = app.chat.query_one(StatusLine)
            await until(
                pilot,
                lambda: "server unreachable · peer-to-peer with 1 member" in str(status.render()),
                "the peer-to-peer status line",
            )
            assert "invites, removals and new keys wait for the server" in shown(app)

            server.start()
            await until(pilot, lambda: MARK not in shown(app), "the server's copy", 40)
            assert shown(app).count("hello without a server") == 1
            assert "peer-to-peer" not in str(status.render())
    finally:
        server.stop()
