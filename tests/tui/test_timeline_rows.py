"""The timeline draws the rows in view only (Textual's line API): what a
redraw costs does not grow with the rows above and below the view, however
large and hostile the room's messages are; and the rows follow the width
left beside the scroll bar when it comes."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from curvechat.client.cache import CachedMessage
from curvechat.tui import logview
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.widgets.timeline import Timeline


class OneTimeline(App[None]):
    CSS = "Timeline { height: 1fr; }"

    def compose(self) -> ComposeResult:
        yield Timeline(id="timeline")


def message(seq: int, text: str) -> CachedMessage:
    return CachedMessage("den", seq, seq * 1_000, "mallory", f"t{seq}", 0, text, None)


def shown_rows(app: OneTimeline) -> list[str]:
    region = app.query_one(Timeline).content_region
    rows = app.screen._compositor.render_strips()[region.y : region.bottom]
    return [row.text[region.x : region.right].rstrip() for row in rows]


async def test_a_redraw_draws_the_rows_in_view_only(monkeypatch: pytest.MonkeyPatch) -> None:
    log = RoomLog("den", "alice", loaded=True)
    for seq in range(1, 301):
        log.add_message(message(seq, "\x1b" * 1_600))  # about 20 rows each
    app = OneTimeline()
    async with app.run_test(size=(100, 30)) as pilot:
        timeline = app.query_one(Timeline)
        timeline.show(log, "alice", {})
        await pilot.pause()
        assert timeline.virtual_size.height > 5_000
        drawn: list[int] = []
        row_segments = logview._row_segments

        def counting(row, width, console):  # type: ignore[no-untyped-def]
            drawn.append(1)
            return row_segments(row, width, console)

        monkeypatch.setattr(logview, "_row_segments", counting)
        log.add_message(message(301, "one more"))
        timeline.show(log, "alice", {})
        await pilot.pause()
        assert 0 < len(drawn) <= 30  # the new rows in view, not the room's thousands
        assert shown_rows(app)[-1].endswith("mallory: one more")


async def test_the_newest_row_stays_in_view_when_the_scroll_bar_comes() -> None:
    log = RoomLog("den", "alice", loaded=True)
    log.add_message(message(1, "short"))
    app = OneTimeline()
    async with app.run_test(size=(60, 12)) as pilot:
        timeline = app.query_one(Timeline)
        timeline.show(log, "alice", {})
        await pilot.pause()
        full = timeline.scrollable_content_region.width
        # Lines exactly as wide as the view without the bar: each takes one
        # row more once the bar shows, and the newest's second row must
        # still be in view.
        head = len("00:00  mallory: ")
        for seq in range(2, 30):
            log.add_message(message(seq, f"{seq:02d}" + "x" * (full - head - 2)))
        timeline.show(log, "alice", {})
        await pilot.pause()
        await pilot.pause()
        beside_bar = full - timeline.styles.scrollbar_size_vertical
        assert timeline.scrollable_content_region.width == beside_bar
        assert timeline.virtual_size.width == beside_bar
        rows = shown_rows(app)
        assert rows[-2].startswith("00:00  mallory: 29x"), rows
        newest = rows[-2][head:] + rows[-1].strip()
        assert newest == "29" + "x" * (full - head - 2), rows


@pytest.mark.parametrize("width", [1, 2, 3, 4])
async def test_a_view_as_narrow_as_its_scroll_bar_does_not_measure_for_ever(width: int) -> None:
    """With no column left beside the bar, the view measured at one column
    (max(1, width - bar)) found a width of 0 drawn, measured again, and so
    on, about 60 times a second for as long as it stayed that narrow."""
    log = RoomLog("den", "alice", loaded=True)
    for seq in range(1, 40):
        log.add_message(message(seq, "hello"))
    app = OneTimeline()
    async with app.run_test(size=(width, 10)) as pilot:
        timeline = app.query_one(Timeline)
        measured = 0
        measure = timeline._measure

        def counting() -> None:
            nonlocal measured
            measured += 1
            measure()

        timeline._measure = counting  # type: ignore[method-assign]
        timeline.show(log, "alice", {})
        await pilot.pause()
        measured = 0
        await pilot.pause(0.5)
        assert measured <= 2
