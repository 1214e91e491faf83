"""The reader: one message shown whole, for a message the timeline folds.

The text is another person's and hostile: every line is made visible (a
placeholder for each control, escape or bidi character; see
`curvechat.protocol.text`) before the read-only text area gets it, and the
area draws only the rows in view, so a message of 16,000 lines opens as fast
as a short one scrolls. Esc or q closes it.

It must never send, edit or keep what it shows.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea

from curvechat.protocol.text import visible, visible_lines


class ReaderScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="reader.close"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_line = visible(title)
        self.lines = visible_lines(text)

    def compose(self) -> ComposeResult:
        with Vertical(id="reader-box"):
            yield Static(self.title_line, id="reader-title", markup=False)
            yield TextArea(
                "\n".join(self.lines),
                id="reader-text",
                read_only=True,
                soft_wrap=True,
            )
            yield Static("Esc or q closes", id="reader-help", markup=False)

    def on_mount(self) -> None:
        self.query_one("#reader-text", TextArea).focus()

    def action_close(self) -> None:
        self.dismiss(None)
