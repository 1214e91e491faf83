"""Messages the engine opens late, or finds to be replays, in the room log the
chat screen shows (`RoomLog`, fed the engine's events as the screen feeds
them): a message opened late below the loaded window does not become the
window's first message (which would make the older pages skip history),
and a message shown that turns out a replay stops being shown as a message,
so that what the engine later opens at its seq takes its place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from client.test_recovery import Room, _connected

from curvechat.client.cache import CachedMessage
from curvechat.client.events import Event
from curvechat.protocol import messages as m
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.screens import engine_events


def msg(seq: int, text: str | None = None, error: str | None = None) -> CachedMessage:
    return CachedMessage("den", seq, 1_000 + seq, "bob", f"t{seq}", 900, text, error)


def window(first: int, last: int) -> RoomLog:
    """A room whose newest page (`first`..`last`) is loaded, older pages not."""
    log = RoomLog("den", "alice")
    for seq in range(first, last + 1):
        log.add_message(msg(seq, f"m{seq}"))
    log.has_older = True
    log.loaded = True
    return log


def older_page(log: RoomLog, cached: list[CachedMessage], size: int) -> None:
    """What the chat screen does when the user scrolls to the top."""
    first = log.first_seq
    page = [c for c in cached if first is None or c.seq < first][-size:]
    added = log.prepend(page)
    first = log.first_seq
    log.has_older = bool(added) and first is not None and first > 1


def test_a_message_opened_late_below_the_window_is_left_to_the_older_pages() -> None:
    log = window(901, 1000)
    assert not log.add_message(msg(5, "opened late"))  # recovery opened seq 5
    assert log.first_seq == 901
    cached = [msg(s, "opened late" if s == 5 else f"m{s}") for s in range(1, 1001)]
    while log.has_older:
        older_page(log, cached, 100)
    assert [e.seq for e in log.ordered()] == list(range(1, 1001))  # nothing skipped
    assert [e.text for e in log.ordered() if e.seq == 5] == ["opened late"]


def test_a_message_opened_late_inside_the_window_or_with_all_loaded_is_shown() -> None:
    log = window(901, 1000)
    log.entries = [e for e in log.entries if e.seq != 950]
    assert log.add_message(msg(950, "opened late"))  # within the window: in its place
    log.has_older = False  # the whole history is loaded
    log.entries = [e for e in log.entries if e.seq != 901]
    assert log.add_message(msg(5, "opened late too"))
    assert log.first_seq == 5


def test_live_messages_before_the_first_page_loads_are_kept() -> None:
    log = RoomLog("den", "alice")  # not loaded yet
    log.add_message(msg(1001, "live"))
    for seq in range(901, 1001):
        log.add_message(msg(seq, f"m{seq}"))
    log.loaded = True
    assert [e.seq for e in log.ordered()] == list(range(901, 1002))


def test_a_message_opened_late_while_the_room_loads_is_left_to_the_older_pages() -> None:
    log = RoomLog("den", "alice")  # its newest page not loaded yet
    log.add_message(msg(5, "opened late"))
    log.add_message(msg(1001, "live"))
    log.newest_page([msg(s, f"m{s}") for s in range(901, 1001)])
    assert log.loaded and log.has_older and log.first_seq == 901
    assert [e.seq for e in log.ordered()] == list(range(901, 1002))


class Screen:
    """What the event handler uses of the chat screen."""

    def __init__(self, log: RoomLog) -> None:
        self.logs = {log.room: log}
        self.current = log.room
        self.me = log.me
        self.peer_unread: dict[str, set[tuple[str, str]]] = {}
        self.mention_re = re.compile("(?!)")
        self.client = self

    def mark_read(self, room: str) -> None: ...
    def redraw(self, **kw: Any) -> None: ...
    def refresh_rooms(self) -> None: ...
    def soon(self, *what: str) -> None: ...
    def notice(self, *a: Any, **kw: Any) -> None: ...


async def test_a_message_that_became_a_replay_is_replaced_by_what_opens_at_its_seq(
    tmp_path: Path,
) -> None:
    w = Room(tmp_path)
    w.epoch(0)
    try:
        log = RoomLog("r", "alice", has_older=False, loaded=True)
        screen = Screen(log)
        await _connected(w)
        a = w.message(2, "A")
        b = w.message(9, "B")
        # The node serves A at 9 first (shown there), then A at 2: the row
        # at 9 becomes a replay marker.
        await w.sync.ingest_page(
            "r", [m.StoredMessage(seq=9, ts=9, envelope=a.envelope)], live=True
        )
        await w.sync.ingest_page("r", [a], live=False)
        # Asked for 9 again, a node serves what 9 really holds.
        w.node.serve = {9: b}
        await _connected(w)
        assert w.rows() == [(2, "A", None), (9, "B", None)]
        events: list[Event] = list(w.events)
        for event in events:
            engine_events.handle(screen, event)  # type: ignore[arg-type]
        assert [(e.seq, e.text) for e in log.ordered()] == [(2, "A"), (9, "B")]
    finally:
        w.cache.close()
