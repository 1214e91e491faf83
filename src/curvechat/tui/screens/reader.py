"""The reader: one message shown whole, for a message the timeline folds.

The text is another person's and hostile: every line is made visible (a
placeholder for each control, escape or bidi character; see
`curvechat.protocol.text`) before the read-only text area gets it, and the
area draws only the rows in view, so a message of 16,000 lines opens as fast
as a short one scrolls. The placeholders are drawn in reverse video, as in
the timeline, so they are told apart from the same characters typed. Esc or
q closes it.

It must never send, edit or keep what it shows.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea
from textual.widgets.text_area import TextAreaTheme

from curvechat.protocol.text import split_lines, visible, visible_parts
from curvechat.tui.format import PLACEHOLDER_STYLE

PLACEHOLDER: Final = "curvechat.placeholder"
THEME: Final = "curvechat-reader"


class MarkedText(TextArea):
    """A read-only text area whose placeholders are in reverse video: each
    line's runs of placeholders are its highlights (UTF-8 byte columns, as
    the text area counts them), styled by a theme of its own."""

    def __init__(self, text: str, **kwargs: object) -> None:
        lines, self._marks = [], {}
        for row, line in enumerate(split_lines(text)):
            shown, at, marks = [], 0, []
            for part, unsafe in visible_parts(line):
                size = len(part.encode())
                if unsafe:
                    marks.append((at, at + size, PLACEHOLDER))
                shown.append(part)
                at += size
            lines.append("".join(shown))
            if marks:
                self._marks[row] = marks
        super().__init__("\n".join(lines), read_only=True, **kwargs)  # type: ignore[arg-type]
        base = TextAreaTheme.get_builtin_theme("css")
        assert base is not None
        styles = {**base.syntax_styles, PLACEHOLDER: Style.parse(PLACEHOLDER_STYLE)}
        self.register_theme(dataclasses.replace(base, name=THEME, syntax_styles=styles))
        self.theme = THEME

    def _build_highlight_map(self) -> None:
        # Called by the text area whenever its document is set: the marks
        # are made before (a text area that is read only keeps its document).
        self._line_cache.clear()
        self._highlights.clear()
        for row, marks in getattr(self, "_marks", {}).items():
            self._highlights[row].extend(marks)


class ReaderScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="reader.close"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_line = visible(title)
        self.body = text

    def compose(self) -> ComposeResult:
        with Vertical(id="reader-box"):
            yield Static(self.title_line, id="reader-title", markup=False)
            yield MarkedText(self.body, id="reader-text", soft_wrap=True)
            yield Static("Esc or q closes", id="reader-help", markup=False)

    def on_mount(self) -> None:
        self.query_one("#reader-text", TextArea).focus()

    def action_close(self) -> None:
        self.dismiss(None)
