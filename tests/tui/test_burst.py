"""A burst of messages into the room on screen (another member, or another
process of this home, sending thousands at once): the terminal client
draws them a few times a burst, not once each, keeps only the newest
`KEPT_MESSAGES` in memory while it follows them (the older come back from
the cache when scrolled up to), and stays usable."""

from __future__ import annotations

from typing import Any

import pytest

from curvechat.tui.screens import chat as chat_screen
from curvechat.tui.widgets.timeline import Timeline

from .conftest import Kit, ready, say, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess

SENT = 1_200
KEPT = 300


async def test_a_burst_is_drawn_a_few_times_and_kept_bounded(
    server: ServerProcess, kit: Kit, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_screen, "KEPT_MESSAGES", KEPT)
    draws = 0
    real_show = Timeline.show

    def counted(self: Timeline, *args: Any, **kwargs: Any) -> None:
        nonlocal draws
        draws += 1
        real_show(self, *args, **kwargs)

    monkeypatch.setattr(Timeline, "show", counted)
    app = kit.app("alice", server.connect, page_size=100)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        bob, _ = await clients.make("bob", server.connect)
        await bob.create_room("flood", ["alice"])
        await until(pilot, lambda: "flood" in app.chat.room_ids(), "alice in #flood")
        await say(pilot, app, "/join flood")
        await until(pilot, lambda: app.chat.current == "flood", "#flood on screen")
        before = draws
        bob.outbox.queue_many("flood", [f"line {i:04d}" for i in range(SENT)])
        last = f"bob: line {SENT - 1:04d}"
        await until(pilot, lambda: last in shown(app), "the burst's last message", 120)
        await pilot.pause(0.3)
        burst_draws = draws - before
        assert burst_draws < SENT / 10, f"{burst_draws} draws for {SENT} messages"
        kept = [e for e in app.chat.logs["flood"].entries if e.kind == "message"]
        assert len(kept) <= KEPT + 1, len(kept)
        assert app.chat.logs["flood"].has_older
        assert app.client.cache.room("flood").unread == 0  # read: it is on screen
        # Scrolled up to, the older messages come back from the cache, in order.
        for _ in range(60):
            if "line 0000" in shown(app):
                break
            await pilot.press("pageup")
            await pilot.pause(0.05)
        text = shown(app)
        assert "line 0000" in text, text[:300]
        assert text.index("line 0000") < text.index("line 0600") < text.index(last)
