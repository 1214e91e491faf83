"""The left column: rooms and direct messages, unread counts, mentions."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from curvechat.tui.messages import RoomChosen


@dataclass(frozen=True, slots=True)
class RoomRow:
    room: str
    label: str
    unread: int
    mentioned: bool


def row_text(row: RoomRow, current: bool, width: int = 20) -> Text:
    badge = ""
    if row.unread:
        badge = str(row.unread) if row.unread < 1000 else "999+"
    if row.mentioned:
        badge = f"{badge} @".strip()
    label_width = max(4, width - len(badge) - 2)
    label = row.label if len(row.label) <= label_width else row.label[: label_width - 1] + "…"
    text = Text("▸ " if current else "  ", style="bold")
    text.append(label, style="bold" if current or row.unread else "")
    if badge:
        text.append(" " * max(1, width - 2 - len(label) - len(badge)))
        text.append(badge, style="bold reverse red" if row.mentioned else "bold reverse")
    return text


class RoomList(OptionList):
    """Rooms (#name) then direct messages (@user); Enter opens one."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[RoomRow] = []
        self.current: str | None = None

    def set_rows(self, rows: list[RoomRow], current: str | None) -> None:
        groups = sorted((r for r in rows if r.label.startswith("#")), key=lambda r: r.label)
        dms = sorted((r for r in rows if not r.label.startswith("#")), key=lambda r: r.label)
        ordered = groups + dms
        if ordered == self.rows and current == self.current:
            return
        self.rows, self.current = ordered, current
        width = max(12, self.scrollable_content_region.width or 20)
        self.clear_options()
        self.add_options(
            [Option(row_text(r, r.room == current, width), id=r.room) for r in ordered]
        )
        for i, r in enumerate(ordered):
            if r.room == current:
                self.highlighted = i

    def on_resize(self) -> None:
        rows, self.rows = self.rows, []
        self.set_rows(rows, self.current)  # badges right-aligned to the new width

    def line(self, room: str) -> str:
        """The row of `room` as plain text (for tests and screen readers)."""
        for r in self.rows:
            if r.room == room:
                return row_text(r, r.room == self.current).plain.strip()
        return ""

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(RoomChosen(event.option.id))
