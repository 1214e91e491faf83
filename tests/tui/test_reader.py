"""`/more`'s reader marks placeholders as the timeline does: in reverse
video, so that a control shown as ``\\x1b`` is told apart from a backslash,
x, 1 and b typed by the sender."""

from __future__ import annotations

from textual.app import App

from curvechat.tui.screens.reader import MarkedText, ReaderScreen

TEXT = "typed \\x1b, sent \x1b[2J é\u202e end\nline two \x07\n\nplain"


class _Host(App[None]):
    def on_mount(self) -> None:
        self.push_screen(ReaderScreen("mallory · 09:00", TEXT))


def _runs(area: MarkedText, y: int) -> list[tuple[str, bool]]:
    """The row's text as (run, drawn in reverse video), the cursor left out."""
    runs: list[tuple[str, bool]] = []
    for seg in area.render_line(y):
        reverse = bool(seg.style and seg.style.reverse)
        if runs and runs[-1][1] == reverse:
            runs[-1] = (runs[-1][0] + seg.text, reverse)
        else:
            runs.append((seg.text, reverse))
    return [(text.rstrip(), rev) for text, rev in runs if text.strip()]


async def test_placeholders_are_in_reverse_video_and_typed_lookalikes_are_not() -> None:
    app = _Host()
    async with app.run_test(size=(80, 12)) as pilot:
        await pilot.pause()
        area = app.screen.query_one(MarkedText)
        assert area.text == "typed \\x1b, sent \\x1b[2J é\\u202e end\nline two \\x07\n\nplain"
        assert _runs(area, 0) == [
            ("typed \\x1b, sent", False),
            ("\\x1b", True),
            ("[2J é", False),
            ("\\u202e", True),
            (" end", False),
        ]
        assert _runs(area, 1) == [("line two", False), ("\\x07", True)]
        assert _runs(area, 3) == [("plain", False)]
        assert area.read_only
