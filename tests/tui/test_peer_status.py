"""The terminal client in peer-to-peer mode: with the server killed, a
member's message comes straight from that member, marked as not on the
server yet, and the status line says "server unreachable · peer-to-peer
with 1 member"; once the server is back the message takes its place. A
message taken so in a room not opened yet counts in its unread number
(once, also after the server's copy came) and is shown when it is opened
(loading a room's log adds what the peer core holds, not only the outbox)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from curvechat.client.engine import ChatClient
from curvechat.client.peer.shell import PeerOptions
from curvechat.client.state import ConnState
from curvechat.tui.widgets.rooms import RoomList
from curvechat.tui.widgets.status import StatusLine

from .conftest import Kit, ready, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess

LOOPBACK = PeerOptions(bind="tcp://127.0.0.1:*", interval=0.2, timeout=1.0)
MARK = "◌ peer-to-peer · not on the server yet"


@contextlib.asynccontextmanager
async def alice_and_bob(
    tmp_path: Path, kit: Kit, clients: ClientFactory
) -> AsyncIterator[tuple[ServerProcess, Any, Any, ChatClient]]:
    """A real server; alice's terminal client and bob's engine, both in
    peer-to-peer mode on loopback: (server, app, pilot, bob)."""
    server = ServerProcess(tmp_path / "node").start()
    try:
        app = kit.app("alice", server.connect, peers=LOOPBACK)
        async with app.run_test(size=(100, 24)) as pilot:
            await ready(pilot, app)
            bob, _ = await clients.make("bob", server.connect, peers=LOOPBACK)
            yield server, app, pilot, bob
    finally:
        server.stop()


def rooms_line(app: Any, room: str) -> str:
    return str(app.chat.query_one(RoomList).line(room))


async def meet(pilot: Any, alice: ChatClient, bob: ChatClient) -> None:
    """Until alice and bob know where the other listens."""
    assert alice.peer is not None and bob.peer is not None
    for _ in range(50):
        await bob.peer.publish()
        await alice.peer.publish()
        if alice.peer.core.peers() and bob.peer.core.peers():
            return
        await pilot.pause(0.1)


async def test_status_line_and_provisional_messages(
    tmp_path: Path, kit: Kit, clients: ClientFactory
) -> None:
    async with alice_and_bob(tmp_path, kit, clients) as (server, app, pilot, bob):
        await bob.create_room("p2p", ["alice"])
        await until(pilot, lambda: app.chat.current == "p2p", "alice in #p2p")
        alice = app.client
        await meet(pilot, alice, bob)
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


async def test_a_peer_message_in_a_room_opened_later_is_shown(
    tmp_path: Path, kit: Kit, clients: ClientFactory
) -> None:
    async with alice_and_bob(tmp_path, kit, clients) as (server, app, pilot, bob):
        await bob.create_room("first", ["alice"])
        await until(pilot, lambda: app.chat.current == "first", "alice in #first")
        await bob.create_room("second", ["alice"])
        alice = app.client
        await until(pilot, lambda: bool(alice.core.held("second")), "alice in #second")
        await meet(pilot, alice, bob)
        server.kill()
        await until(pilot, lambda: bob.status.state is not ConnState.LIVE, "bob offline")
        await bob.send("second", "meet at noon, not at ten", wait=False)
        await until(
            pilot,
            lambda: [i.text for i in alice.provisional("second")] == ["meet at noon, not at ten"],
            "alice's client took bob's message",
        )
        assert app.chat.current == "first"
        # Unread in the room list, as a message from the server would be; and
        # once the server's copy comes, counted once.
        await until(pilot, lambda: rooms_line(app, "second").endswith(" 1"), "marked unread")
        server.start()
        await until(pilot, lambda: not alice.provisional("second"), "the server's copy", 40)
        await pilot.pause(0.3)
        assert rooms_line(app, "second").endswith(" 1")
        app.chat.switch_room("second")
        await until(pilot, lambda: app.chat.logs["second"].loaded, "#second loaded")
        await pilot.pause(0.5)
        assert "meet at noon, not at ten" in shown(app), shown(app)
