"""A new line in the message: Ctrl+J, which every terminal sends (a line
feed, read as "ctrl+j"), inserts one and sends nothing; Enter then sends
the lines together. Alt+Enter does the same only where the terminal tells
it apart (the kitty keyboard protocol, ESC [13;3u): xterm, tmux and VTE send
it as ESC CR, which reads as a plain Enter (docs/tui.md says so)."""

from __future__ import annotations

from textual._xterm_parser import XTermParser

from curvechat.tui.widgets.composer import Composer

from .conftest import Kit, ready, shown, until
from support.servers import ServerProcess


def keys_for(raw: str) -> list[str]:
    """The keys Textual reads from the bytes a terminal sends."""
    parser = XTermParser(debug=False)
    return [e.key for e in [*parser.feed(raw), *parser.feed("")]]


async def test_ctrl_j_starts_a_new_line_and_sends_nothing(server: ServerProcess, kit: Kit) -> None:
    assert keys_for("\n") == ["ctrl+j"]  # Ctrl+J, from any terminal
    assert keys_for("\x1b[13;3u") == ["alt+enter"]  # Alt+Enter, kitty protocol only
    assert keys_for("\x1b\r") == ["enter"]  # Alt+Enter elsewhere: the Alt is lost
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        chat = app.chat
        assert chat is not None and app.client is not None
        await app.client.create_room("den", [])
        await until(pilot, lambda: "den" in chat.room_ids(), "den")
        chat.switch_room("den")
        composer = chat.query_one(Composer)
        composer.focus()
        await pilot.press(*"first")
        await pilot.press(*keys_for("\n"))  # Ctrl+J, as the terminal sends it
        await pilot.press(*"second")
        await pilot.pause(0.3)
        assert composer.text == "first\nsecond"
        assert app.client.pending() == [] and app.client.cache.messages("den") == []
        await pilot.press("alt+enter")
        assert composer.text == "first\nsecond\n"
        await pilot.press("backspace", "enter")
        await until(
            pilot,
            lambda: [m.text for m in app.client.cache.messages("den")] == ["first\nsecond"],
            "sent",
        )  # type: ignore[union-attr]
        assert "alice: first" in shown(app)
