"""`/msg USER TEXT` and `/dm USER TEXT` with a TEXT over the limit are
refused before anything, as docs/tui.md says: no direct-message room is
made on the server (USER would see an empty room from you), nothing is
queued. A TEXT within the limit still opens the room and goes."""

from __future__ import annotations

import asyncio

import pytest

from curvechat.protocol.limits import MAX_TEXT_CHARS

from .conftest import Kit, ready, say, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess


@pytest.mark.parametrize("command", ["/msg", "/dm"])
async def test_a_too_long_text_opens_no_dm_room(
    server: ServerProcess, kit: Kit, clients: ClientFactory, command: str
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        chat = app.chat
        assert chat is not None and app.client is not None
        bob, bob_events = await clients.make("bob", server.connect)
        await say(pilot, app, f"{command} bob " + "y" * (MAX_TEXT_CHARS + 1))
        await until(pilot, lambda: "!! Your message is too long" in shown(app), "refused")
        await asyncio.sleep(1.0)  # what the server would have pushed to bob by now
        assert app.client.pending() == []
        assert "@alice:bob" not in chat.room_ids()
        assert "@alice:bob" not in [r.room for r in bob.rooms()], "bob got an empty DM room"
        await say(pilot, app, f"{command} bob " + "y" * MAX_TEXT_CHARS)
        await bob_events.until(lambda: len(bob.cache.messages("@alice:bob")) == 1)
