"""A burst of messages into the room on screen (another member, or another
process of this home, sending thousands at once): the terminal client
draws them a few times a burst, not once each, keeps only the newest
`KEPT_MESSAGES` in memory while it follows them (the older come back from
the cache when scrolled up to), and stays usable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from curvechat.client.engine import ChatClient
from curvechat.tui.screens import chat as chat_screen
from curvechat.tui.widgets.timeline import Timeline

from .conftest import Kit, on_screen, ready, say, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess

SENT = 1_200
KEPT = 300


async def _flood_room(
    server: ServerProcess, kit: Kit, clients: ClientFactory, pilot: Any, app: Any
) -> ChatClient:
    await ready(pilot, app)
    bob, _ = await clients.make("bob", server.connect)
    await bob.create_room("flood", ["alice"])
    await until(pilot, lambda: "flood" in app.chat.room_ids(), "alice in #flood")
    await say(pilot, app, "/join flood")
    await until(pilot, lambda: app.chat.current == "flood", "#flood on screen")
    return bob


async def _scroll_to_top(pilot: Any, app: Any) -> str:
    for _ in range(80):
        log = app.chat.logs["flood"]
        if not log.has_older and app.chat.query_one(Timeline).scroll_y <= 0:
            break
        await pilot.press("pageup")
        await pilot.pause(0.05)
    return shown(app)


def _count_draws(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the timeline's draws from now on, in the list's one item."""
    draws = [0]
    real_show = Timeline.show

    def counted(self: Timeline, *args: Any, **kwargs: Any) -> None:
        draws[0] += 1
        real_show(self, *args, **kwargs)

    monkeypatch.setattr(Timeline, "show", counted)
    return draws


async def test_a_burst_is_drawn_a_few_times_and_kept_bounded(
    server: ServerProcess, kit: Kit, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_screen, "KEPT_MESSAGES", KEPT)
    draws = _count_draws(monkeypatch)
    app = kit.app("alice", server.connect, page_size=100)
    async with app.run_test(size=(100, 30)) as pilot:
        bob = await _flood_room(server, kit, clients, pilot, app)
        before = draws[0]
        bob.outbox.queue_many("flood", [f"line {i:04d}" for i in range(SENT)])
        last = f"bob: line {SENT - 1:04d}"
        await until(pilot, lambda: last in shown(app), "the burst's last message", 120)
        await pilot.pause(0.3)
        burst_draws = draws[0] - before
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


KEPT_SMALL = 50
FIRST = 200
MORE = 30


async def test_an_older_page_asked_for_before_a_trim_is_asked_for_again(
    server: ServerProcess, kit: Kit, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user scrolls to the top (an older page is asked for; the server
    is slow to send what the cache lacks), then back to the bottom; more
    messages come in and the log is trimmed. The page that then lands is
    not put below messages no longer in the log (a gap the older pages
    would never fill): it is asked for again, and every message shows."""
    monkeypatch.setattr(chat_screen, "KEPT_MESSAGES", KEPT_SMALL)
    app = kit.app("alice", server.connect, page_size=20)
    async with app.run_test(size=(100, 30)) as pilot:
        bob = await _flood_room(server, kit, clients, pilot, app)
        bob.outbox.queue_many("flood", [f"line {i:04d}" for i in range(FIRST)])
        await until(pilot, lambda: f"line {FIRST - 1:04d}" in shown(app), "first burst", 120)
        await pilot.pause(0.3)
        log = app.chat.logs["flood"]
        assert log.has_older and len([e for e in log.entries if e.kind == "message"]) <= KEPT_SMALL

        gate = asyncio.Event()
        client = app.chat.client
        real = client.history

        async def slow(room: str, *, limit: int = 100, before: int | None = None) -> Any:
            if before is not None:
                await gate.wait()  # a server slow to serve an older page
            return await real(room, limit=limit, before=before)

        client.history = slow  # type: ignore[method-assign]
        timeline = app.chat.query_one(Timeline)
        timeline.want_older()  # scrolled to the top ...
        await until(pilot, lambda: timeline.loading_older, "older page asked for")
        timeline.follow()  # ... and back to the bottom
        bob.outbox.queue_many("flood", [f"more {i:04d}" for i in range(MORE)])
        await until(pilot, lambda: f"more {MORE - 1:04d}" in shown(app), "second burst", 60)
        await pilot.pause(0.3)  # the catch-up trims
        gate.set()
        await until(pilot, lambda: not timeline.loading_older, "older page landed")
        await pilot.pause(0.2)
        client.history = real  # type: ignore[method-assign]

        text = await _scroll_to_top(pilot, app)
        missing = [i for i in range(FIRST) if f"line {i:04d}" not in text]
        assert not missing, f"never shown again: line {missing[0]:04d}..line {missing[-1]:04d}"
        seqs = [e.seq for e in log.entries if e.kind == "message"]
        assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_notice_outlives_the_trim(
    server: ServerProcess, kit: Kit, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local notice older than the messages kept is kept (the cache holds
    messages only: a dropped notice would not come back)."""
    monkeypatch.setattr(chat_screen, "KEPT_MESSAGES", KEPT_SMALL)
    app = kit.app("alice", server.connect, page_size=20)
    async with app.run_test(size=(100, 30)) as pilot:
        bob = await _flood_room(server, kit, clients, pilot, app)
        bob.outbox.queue_many("flood", ["before the notice"])
        await until(pilot, lambda: "before the notice" in shown(app), "first")
        app.chat.notice("MARKER: a notice the user was shown", "warning")
        bob.outbox.queue_many("flood", [f"line {i:04d}" for i in range(FIRST)])
        await until(pilot, lambda: f"line {FIRST - 1:04d}" in shown(app), "burst", 120)
        await pilot.pause(0.3)
        text = await _scroll_to_top(pilot, app)
        assert "before the notice" in text and "line 0000" in text
        assert "MARKER" in text, "the notice is gone for good"


async def test_a_burst_while_reading_older_messages_is_drawn_back_at_the_bottom(
    server: ServerProcess, kit: Kit, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the user reads older messages (scrolled up), a burst coming in
    is not drawn again and again with the whole log, nor kept in memory past
    KEPT_MESSAGES more (the cache holds the rest): the timeline says new
    messages are below, and draws the newest once the view is back at the
    bottom."""
    monkeypatch.setattr(chat_screen, "KEPT_MESSAGES", KEPT_SMALL)
    draws = _count_draws(monkeypatch)
    app = kit.app("alice", server.connect, page_size=20)
    async with app.run_test(size=(100, 30)) as pilot:
        bob = await _flood_room(server, kit, clients, pilot, app)
        bob.outbox.queue_many("flood", [f"line {i:04d}" for i in range(FIRST)])
        await until(pilot, lambda: f"line {FIRST - 1:04d}" in shown(app), "first burst", 120)
        timeline = app.chat.query_one(Timeline)
        await pilot.pause(0.3)
        await pilot.press("pageup")
        await pilot.pause(0.3)
        assert not timeline.following
        before = draws[0]
        log = app.chat.logs["flood"]
        held = len([e for e in log.entries if e.kind == "message"])
        bob.outbox.queue_many("flood", [f"more {i:04d}" for i in range(SENT)])
        last = f"more {SENT - 1:04d}"
        cache = app.chat.client.cache
        await until(pilot, lambda: cache.room("flood").head >= FIRST + SENT, "the burst in", 120)
        await pilot.pause(0.3)
        assert draws[0] == before, f"{draws[0] - before} draws while scrolled up"
        in_memory = len([e for e in log.entries if e.kind == "message"])
        assert in_memory <= held + KEPT_SMALL, (held, in_memory)
        assert log.has_newer
        assert "new messages below" in str(timeline.border_subtitle)
        for _ in range(40):  # back down, a page at a time
            if timeline.following:
                break
            await pilot.press("pagedown")
            await pilot.pause(0.05)
        await until(pilot, lambda: last in on_screen(app), "drawn back at the bottom", 20)
        await pilot.pause(0.3)
        assert timeline.following and not timeline.border_subtitle
        kept = [e for e in log.entries if e.kind == "message"]
        assert len(kept) <= KEPT_SMALL + 1, len(kept)


async def test_a_room_not_on_screen_keeps_only_its_newest_messages(
    server: ServerProcess, kit: Kit, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room the user looked at and left, flooded meanwhile, keeps its
    newest KEPT_MESSAGES in memory; opened again, it shows the newest."""
    monkeypatch.setattr(chat_screen, "KEPT_MESSAGES", KEPT_SMALL)
    app = kit.app("alice", server.connect, page_size=20)
    async with app.run_test(size=(100, 30)) as pilot:
        bob = await _flood_room(server, kit, clients, pilot, app)
        await bob.create_room("quiet", ["alice"])
        await until(pilot, lambda: "quiet" in app.chat.room_ids(), "alice in #quiet")
        await say(pilot, app, "/join quiet")
        await until(pilot, lambda: app.chat.current == "quiet", "#quiet on screen")
        bob.outbox.queue_many("flood", [f"line {i:04d}" for i in range(FIRST)])
        cache = app.chat.client.cache
        await until(pilot, lambda: cache.room("flood").head >= FIRST, "the burst in", 120)
        await pilot.pause(0.3)
        log = app.chat.logs["flood"]
        kept = [e.seq for e in log.entries if e.kind == "message"]
        assert len(kept) <= KEPT_SMALL and kept[-1] == FIRST, (len(kept), kept[-1:])
        await say(pilot, app, "/join flood")
        last = f"line {FIRST - 1:04d}"
        await until(pilot, lambda: last in on_screen(app), "the newest, back on screen", 20)
