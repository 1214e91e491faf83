"""Hostile text in the terminal client: mallory sends the corpus (escape
sequences, OSC 52 and OSC 8, CR, bidi, zero-width characters, forged lines,
markup); the timeline shows placeholders, parses no markup, and starts a row
in its first column only for a real entry. Then the same in a real terminal
(tmux): the screen is not cleared, the clipboard and the title are not
written."""

from __future__ import annotations

import io
import re
import shutil
import uuid
from pathlib import Path

import pytest
from rich.console import Console
from textual.strip import Strip
from textual.widgets import Static

from curvechat.client.cache import CachedMessage
from curvechat.client.state import ConnState, ConnStatus
from curvechat.tui.app import CurvechatApp
from curvechat.tui.format import shown_name
from curvechat.tui.logview import render_log
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.widgets.status import Banner, banner_text
from curvechat.tui.widgets.timeline import Timeline

from .conftest import Kit, ready, say, shown, until
from .test_first_run import Tmux, init_user
from support.clients import ClientFactory
from support.hostile_text import CORPUS, FORGED_TUI, SENTINEL, TITLE, Sender, unsafe
from support.servers import ServerProcess

TEXTS = [*CORPUS.values(), SENTINEL]
MARKUP = CORPUS["markup"]


def check_rows(rows: list[str], entries: int, sender: str = "mallory") -> None:
    """Only a real entry (or a day separator) starts in the first column: a
    message of `sender`'s (the only one), a local notice, or a day separator
    (on a narrow screen the head of an entry is cut at the edge). Every other
    row, a further line or a wrap, starts with a space."""
    starts = [r for r in rows if r[:1] not in ("", " ")]
    bad = [r for r in starts if not (r.startswith("──── ") or _is_head(r, sender))]
    assert bad == [], bad
    assert len([r for r in starts if not r.startswith("──── ")]) == entries, starts


def _is_head(row: str, sender: str) -> bool:
    if re.match(r"\d\d:\d\d( -- | !! )", row):
        return True
    head = f"  {sender}: "
    return (
        re.match(r"\d\d:\d\d", row) is not None and row[5 : 5 + len(head)] == head[: len(row) - 5]
    )


def drawn(app: CurvechatApp) -> list[Strip]:
    """Every row of the timeline as drawn, on screen or scrolled away."""
    assert app.chat is not None
    timeline = app.chat.query_one(Timeline)
    return [timeline.drawn_row(y) for y in range(timeline.virtual_size.height)]


@pytest.mark.parametrize("width", [12, 24, 40, 80, 200])
@pytest.mark.parametrize("sender", ["mallory", "an-alias-for-mallory-longer-than-any-name"])
def test_no_text_starts_a_row_at_any_width(width: int, sender: str) -> None:
    log = RoomLog("den", "alice")
    for seq, text in enumerate(TEXTS, 1):
        log.add_message(
            CachedMessage("den", seq, seq * 60_000, "mallory", f"t{seq}", 0, text, None)
        )
    console = Console(width=width, file=io.StringIO(), color_system=None, highlight=False)
    console.print(render_log(log, "alice", {"mallory": sender}))
    rows = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(len(r) <= width for r in rows)
    assert unsafe("".join(rows)) == []
    check_rows(rows, len(TEXTS), shown_name("mallory", {"mallory": sender}))


async def test_the_timeline_shows_hostile_text_as_placeholders(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        mallory, _ = await clients.make("mallory", server.connect)
        await mallory.create_room("den", ["alice"])
        for text in TEXTS:
            await mallory.send("den", text)
        await until(pilot, lambda: SENTINEL in shown(app), "the whole corpus")
        # An alias with markup or a control character is refused (it once
        # crashed the room's title, and reached the terminal in the room list).
        await say(pilot, app, "/nick mallory [b]mal[/b]" + CORPUS["sgr"].split()[0])
        await until(pilot, lambda: "an alias is one word" in shown(app), "the alias refused")
        await say(pilot, app, "/nick mallory")
        await until(pilot, lambda: "mallory has no alias" in shown(app), "none set")
        await pilot.pause()

        strips = drawn(app)
        rows = [strip.text for strip in strips]
        screen = "\n".join(rows)
        assert unsafe(screen) == [], sorted(set(unsafe(screen)))
        assert "\\x1b[2J" in screen and "\\u202e" in screen and "\\x9b" in screen
        assert MARKUP in shown(app).replace("\n", "")  # literal: no markup is parsed
        entries = len(TEXTS) + 2  # the corpus, and an error for each /nick
        check_rows(rows, entries)
        marked = [
            seg
            for strip in strips
            for seg in strip
            if "\\x1b" in seg.text and seg.style is not None and seg.style.reverse
        ]
        assert marked, "placeholders are drawn in reverse video"
        plain = shown(app)
        assert unsafe(plain.replace("\n", "")) == []
        assert "│ " + FORGED_TUI in plain

        # the members column and the banner do not parse markup either
        app.chat.aliases["mallory"] = MARKUP + CORPUS["osc52_clipboard"]
        app.chat.refresh_rooms()
        members = str(app.chat.query_one("#members", Static).render())
        assert MARKUP in members and unsafe(members.replace("\n", "")) == [], members
        banner = app.chat.query_one(Banner)
        status = ConnStatus(ConnState.RECONNECTING, detail=MARKUP + CORPUS["clear_screen"])
        banner.update(banner_text(status, 0.0) or "")
        said = str(banner.render())
        assert MARKUP in said and "\\x1b[2J" in said and unsafe(said) == [], said


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_hostile_text_in_tmux(server: ServerProcess, tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init_user(server, home, "alice", "alice's secret")
    tmux = Tmux(f"curvechat-test-{uuid.uuid4().hex[:8]}")
    tmux.start_chat(
        home, "TZ=UTC", "CURVECHAT_PASSPHRASE=alice's secret", "COLORTERM=truecolor", size=(120, 90)
    )
    try:
        tmux("set-option", "-s", "set-clipboard", "on")  # honour OSC 52, as many users do
        tmux.wait(lambda t: "caught up 0 messages" in t, "connected")
        mallory = Sender("mallory", server.connect, tmp_path / "mallory")
        mallory.create("den", ["alice"])
        mallory.send("den", TEXTS)
        pane = tmux.wait(lambda t: SENTINEL in t, "the whole corpus")
        title = tmux("display-message", "-p", "-t", "chat", "#{pane_title}")
        buffers = tmux("list-buffers")
        tmux.quit()
    finally:
        tmux("kill-server")
    assert buffers.strip() == "", f"OSC 52 wrote a buffer: {buffers!r}"
    assert TITLE not in title
    assert "^q Quit" in pane and "alice · tcp://127.0.0.1:" in pane, pane  # not cleared
    assert "\\x1b[2J" in pane and "\\x1b]52;c;" in pane and "\\u202e" in pane, pane
    assert unsafe(pane.replace("\n", "")) == []

    rows = pane.splitlines()
    last = next(i for i, r in enumerate(rows) if SENTINEL in r)
    found = re.search(rf"\d\d:\d\d  mallory: {SENTINEL}", rows[last])
    assert found is not None, rows[last]
    col = found.start()  # where the timeline's first column is
    top = next(i for i, r in enumerate(rows) if "#den" in r[:col])
    check_rows([r[col:] for r in rows[top : last + 1]], len(TEXTS))
