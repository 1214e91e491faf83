"""The input line: Enter sends, Ctrl+J (or Alt+Enter) starts a new line,
pasted text keeps its lines, Up/Down walk the history of what was sent, Tab
completes slash commands, rooms and users."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import TextArea

from curvechat.tui.messages import LineSubmitted

Completer = Callable[[str], str]


class Composer(TextArea):
    BINDINGS: ClassVar[list[BindingType]] = [
        # Ctrl+J (a line feed) reaches us from every terminal; Alt+Enter only
        # with the kitty keyboard protocol: others send it as ESC CR, read as Enter.
        Binding("ctrl+j,alt+enter", "newline", "New line", id="composer.newline", show=False),
    ]

    def __init__(self, *, id: str | None = None, completer: Completer | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, compact=True, tab_behavior="focus")
        self.completer = completer
        self.sent: list[str] = []
        self._history_pos: int | None = None
        self._draft = ""
        self.room = ""
        """The room on screen, which a line submitted is for (set by the screen)."""

    def update_suggestion(self) -> None:
        text = self.text
        at_end = self.cursor_location == self.document.end
        self.suggestion = self.completer(text) if self.completer and at_end else ""

    def action_newline(self) -> None:
        self.insert("\n")

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key == "tab":
            event.stop()
            event.prevent_default()
            if self.suggestion:
                self.insert(self.suggestion)
            return
        row, _ = self.cursor_location
        if event.key == "up" and row == 0 and self.sent:
            event.stop()
            event.prevent_default()
            self._walk(-1)
            return
        last_row = self.document.line_count - 1
        if event.key == "down" and row == last_row and self._history_pos is not None:
            event.stop()
            event.prevent_default()
            self._walk(1)
            return
        await super()._on_key(event)

    def _walk(self, step: int) -> None:
        if self._history_pos is None:
            self._draft = self.text
            pos = len(self.sent)
        else:
            pos = self._history_pos
        pos = max(0, min(len(self.sent), pos + step))
        if pos == len(self.sent):
            self._history_pos = None
            self.text = self._draft
        else:
            self._history_pos = pos
            self.text = self.sent[pos]
        self.move_cursor(self.document.end)

    def set_aside(self) -> bool:
        """Take what is typed out of the line, into its history (Up brings it
        back): the room it was typed for is gone, and the Enter that ends it
        must not send it to the room shown next. False if nothing was typed."""
        text = self.text
        if not text.strip():
            return False
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._history_pos = None
        self._draft = ""
        self.text = ""
        return True

    def give_back(self, text: str) -> None:
        """Put `text`, a line that was submitted but not queued, back into
        the input to send again; if something new was typed meanwhile, that
        stays (and Up brings `text` back)."""
        if not self.text:
            self.text = text
            self.move_cursor(self.document.end)

    def submit(self) -> None:
        text = self.text
        if self.set_aside():
            self.post_message(LineSubmitted(text, self.room))
