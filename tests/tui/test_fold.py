"""A long message is folded in the timeline and read whole with /more.

The timeline draws every entry it holds on each change, so one hostile
message of 16,000 line breaks (or of 16,000 escape characters, each drawn as
a four-column placeholder) used to be thousands of rows drawn again on every
redraw: the terminal froze for seconds at each keystroke. Now it shows the
start of such a message and a line saying how long it is; `/more` opens a
reader that draws only the rows in view. An entry is made into rows once,
not on every redraw.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import TextArea

from curvechat.client.cache import CachedMessage
from curvechat.tui import logview
from curvechat.tui.fold import FOLD_CELLS, FOLD_LINES, fold
from curvechat.tui.logview import BlockMemo, render_log
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.screens.reader import ReaderScreen
from curvechat.tui.widgets.timeline import Timeline

from .conftest import Kit, on_screen, ready, say, shown, until
from support.clients import ClientFactory
from support.hostile_text import unsafe
from support.servers import ServerProcess

TALL = "\n".join(f"r{i}" for i in range(2_800))  # 15,689 characters
HOSTILE = {
    "tall": TALL,
    "bare line breaks": "\n" * 16_000,
    "escapes": "\x1b" * 16_000,
    "tag characters": "\U000e0041" * 16_000,
    "one long line": "x" * 16_000,
    "wide characters": "日本" * 8_000,
    "combining marks": "a" + "\u0301" * 15_999,
}


def drawn_rows(log: RoomLog, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, highlight=False)
    console.print(render_log(log, "alice", {}))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def log_of(*texts: str) -> RoomLog:
    log = RoomLog("den", "alice", loaded=True)
    for seq, text in enumerate(texts, 1):
        log.add_message(CachedMessage("den", seq, seq * 1000, "mallory", f"t{seq}", 0, text, None))
    return log


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("width", [24, 80, 200])
def test_a_huge_message_is_drawn_in_a_bounded_number_of_rows(kind: str, width: int) -> None:
    text = HOSTILE[kind]
    rows = drawn_rows(log_of(text), width)
    body = width - min(len("00:00  mallory: "), width - 16)  # the columns a line gets
    bound = 1 + FOLD_LINES + FOLD_CELLS // body + 1 + 1  # day, lines, wraps, note
    assert len(rows) <= bound, (kind, len(rows))
    lines = text.count("\n") + 1
    size = f"{lines:,} lines" if lines > 1 else "1 line"
    note = f"⋯ folded: {size}, {len(text):,} characters · /more reads it whole"
    tail = [r.strip().removeprefix("│").strip() for r in rows if "│" in r or r.startswith(" ")]
    assert " ".join(tail).endswith(note) or "".join(tail).endswith(note.replace(" ", "")), rows
    assert unsafe("".join(rows)) == []


def test_what_folds_and_what_does_not() -> None:
    assert not fold("\n".join(["line"] * FOLD_LINES)).cut
    assert fold("\n".join(["line"] * (FOLD_LINES + 1))).cut
    assert not fold("a" * FOLD_CELLS).cut
    assert fold("a" * (FOLD_CELLS + 1)).cut
    assert not fold("\r\n".join(["line"] * FOLD_LINES)).cut  # CRLF is one break
    # placeholders count at their width: 400 escapes are 1,600 columns
    assert not fold("\x1b" * (FOLD_CELLS // 4)).cut
    assert fold("\x1b" * (FOLD_CELLS // 4 + 1)).cut
    shown = fold("\x1b" * 16_000)
    assert sum(line.cell_len for line in shown.lines) == FOLD_CELLS
    # a short message is drawn whole, with no note
    rows = drawn_rows(log_of("hello\nworld"), 80)
    assert "world" in rows[-1] and "folded" not in "".join(rows)


def test_a_redraw_makes_only_the_entries_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    entry_block = logview.entry_block

    def counting(e, me, aliases):  # type: ignore[no-untyped-def]
        made.append(e.text[:10])
        return entry_block(e, me, aliases)

    monkeypatch.setattr(logview, "entry_block", counting)
    log = log_of(TALL, "hello", "\x1b" * 16_000)
    memo = BlockMemo()
    first = render_log(log, "alice", {}, memo)
    assert len(made) == 3
    again = render_log(log, "alice", {}, memo)
    assert len(made) == 3 and again.items == first.items  # the same blocks
    log.add_message(CachedMessage("den", 4, 4000, "bob", "t4", 0, "new", None))
    render_log(log, "alice", {}, memo)
    assert made[3:] == ["new"]
    render_log(log, "alice", {"mallory": "mal"}, memo)  # an alias: mallory's entries again
    assert sorted(made[4:]) == sorted([TALL[:10], "hello", "\x1b" * 10])


async def test_more_reads_a_folded_message_whole(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        mallory, _ = await clients.make("mallory", server.connect)
        await mallory.create_room("den", ["alice"])
        await mallory.send("den", TALL)
        await mallory.send("den", "\x1b[2J" * 500 + " <escapes-end>")
        await mallory.send("den", "a short one")
        note = f"⋯ folded: 2,800 lines, {len(TALL):,} characters · /more reads it whole"
        await until(pilot, lambda: "a short one" in shown(app), "mallory's messages")
        assert note in shown(app) and "r15" in shown(app) and "r16" not in shown(app)
        assert "<escapes-end>" not in shown(app)
        timeline_view = app.chat.query_one(Timeline)
        assert timeline_view.virtual_size.height < 3 * (FOLD_LINES + 8)

        await say(pilot, app, "/more")  # the newest folded message: the escapes
        await until(pilot, lambda: isinstance(app.screen, ReaderScreen), "the reader")
        text = app.screen.query_one(TextArea).text
        assert text.endswith(" <escapes-end>") and "\\x1b[2J" in text and unsafe(text) == []
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ReaderScreen), "closed")

        await say(pilot, app, "/more 2")
        await until(pilot, lambda: isinstance(app.screen, ReaderScreen), "the reader again")
        area = app.screen.query_one(TextArea)
        assert area.document.line_count == 2_800
        assert area.document.get_line(2_799) == "r2799"
        await pilot.press("q")
        await until(pilot, lambda: not isinstance(app.screen, ReaderScreen), "closed again")

        await say(pilot, app, "/more 3")
        await until(pilot, lambda: "shows 2 folded message(s)" in shown(app), "refused")
        await say(pilot, app, "/more x1b")
        await until(pilot, lambda: "N is a number from 1" in shown(app), "refused")
        await say(pilot, app, "next")
        await until(pilot, lambda: "next" in on_screen(app), "the chat goes on")
