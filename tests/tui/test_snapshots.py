"""Snapshots of the main screen at 80x24 and 120x40 (update them with
`pytest tests/tui --snapshot-update` after checking the change by eye).

They use a fixed, in-memory engine: fixed names, times, connection and
round-trip time, no cursor blink, UTC, so the picture only changes when the
layout does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curvechat.client.cache import CachedMessage, OutboxItem
from curvechat.client.state import ConnState, ConnStatus
from curvechat.client.summary import MemberInfo, RoomSummary
from curvechat.tui.app import CurvechatApp
from curvechat.tui.settings import ChatSettings

from .conftest import until

NOW = 1_772_582_400.0  # 2026-03-04 00:00:00 UTC
DAY1 = int((NOW - 86_400 - 180) * 1000)  # 2026-03-02 23:57
DAY2 = int((NOW - 86_400 + 3_600 * 9) * 1000)  # 2026-03-03 09:00


def _msg(seq: int, ms: int, sender: str, text: str | None, error: str | None = None) -> Any:
    return CachedMessage("general", seq, ms, sender, f"t{seq}", ms, text, error)


class FixedClient:
    """The part of ChatClient the app reads, with canned answers."""

    me = "alice"

    def __init__(self) -> None:
        self.status = ConnStatus(
            ConnState.LIVE, endpoint="tcp://chat.example.org:7700", rtt_ms=3.2, since=NOW
        )
        self.messages = [
            _msg(1, DAY1, "bob", "anyone up for the release tomorrow?"),
            _msg(2, DAY1 + 60_000, "alice", "yes, after the standup"),
            _msg(3, DAY2, "carol", "morning! the build is green\nchangelog is in the wiki"),
            _msg(4, DAY2 + 120_000, "mallory", None, "failed to verify or decrypt: BadSignature"),
            _msg(5, DAY2 + 180_000, "bob", "@alice can you tag it?"),
            _msg(6, DAY2 + 240_000, "alice", "on it"),
        ]

    def subscribe(self, handler: Any) -> None:
        pass

    def rooms(self) -> list[RoomSummary]:
        return [
            RoomSummary("general", ["alice", "bob", "carol", "mallory"], ["alice"], 6, 6, 0, 0),
            RoomSummary("random", ["alice", "bob"], ["bob"], 9, 6, 3, 0),
            RoomSummary("@alice:bob", ["alice", "bob"], ["alice"], 2, 2, 1, 0),
        ]

    def members(self, room: str) -> dict[str, bool]:
        return {u: u in r.admins for r in self.rooms() if r.room == room for u in r.members}

    def member_details(self, room: str) -> list[MemberInfo]:
        verified = {"alice", "bob"}
        return [
            MemberInfo(u, admin, u in verified, False)
            for u, admin in sorted(self.members(room).items())
        ]

    async def history(
        self, room: str, *, limit: int = 100, before: int | None = None
    ) -> list[CachedMessage]:
        return [
            m for m in self.messages if room == "general" and (before is None or m.seq < before)
        ]

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return [OutboxItem(1, "general", "p1", "tagged v1.2, release notes next", DAY2 + 300_000)]

    def provisional(self, room: str) -> list[object]:
        return []  # nothing taken peer to peer

    def mark_read(self, room: str) -> None:
        pass

    def key_changes(self) -> list[str]:
        return []


def fixed_app(tmp_path: Path) -> CurvechatApp:
    settings = ChatSettings(home=tmp_path / "home", clock=lambda: NOW, cursor_blink=False)
    return CurvechatApp(settings, client=FixedClient())


async def _loaded(pilot: Any) -> None:
    app = pilot.app
    await until(pilot, lambda: app.chat is not None and "on it" in _text(app), "history shown")
    await pilot.pause()


def _text(app: CurvechatApp) -> str:
    from curvechat.tui.widgets.timeline import Timeline

    assert app.chat is not None
    return app.chat.query_one(Timeline).plain()


def test_main_screen_80x24(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(fixed_app(tmp_path), terminal_size=(80, 24), run_before=_loaded)


def test_main_screen_120x40(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(fixed_app(tmp_path), terminal_size=(120, 40), run_before=_loaded)


async def test_fixed_screen_content(tmp_path: Path) -> None:
    """What the snapshots show, as text: separators, markers, pending, errors."""
    app = fixed_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot)
        text = _text(app)
    assert text.splitlines() == [
        "──── Monday 02 March 2026 ────",
        "23:57  bob: anyone up for the release tomorrow?",
        "23:58 »alice: yes, after the standup",
        "──── Tuesday 03 March 2026 ────",
        "09:00  carol: morning! the build is green",
        "            │ changelog is in the wiki",
        "09:02  mallory: ⚠ unreadable message (failed to verify or decrypt: BadSignature)",
        "09:03  bob: @alice can you tag it?",
        "09:04 »alice: on it",
        "09:05 »alice: tagged v1.2, release notes next  ◌ pending",
    ]
