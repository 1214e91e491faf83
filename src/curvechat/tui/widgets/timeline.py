"""The centre of the chat screen: one room's history as text.

A `RoomLog` is the model (messages by sequence number, the user's messages
still in the outbox, local notices); `render_log` turns it into lines; the
`Timeline` widget shows them and asks for older pages when scrolled to the
top. A message that failed to decrypt or verify is shown with a marker, never
hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from curvechat.client.cache import CachedMessage
from curvechat.tui.format import clock_time, day, day_label, name_colour
from curvechat.tui.messages import OlderWanted

EntryKind = Literal["message", "pending", "notice"]
NoticeLevel = Literal["info", "error", "warning"]


@dataclass(slots=True)
class Entry:
    kind: EntryKind
    ts_ms: int
    text: str
    sender: str = ""
    seq: int = 0
    txn: str = ""
    error: str | None = None
    """Message: why it could not be read. Pending: why it was not sent."""
    level: NoticeLevel = "info"


@dataclass
class RoomLog:
    room: str
    entries: list[Entry] = field(default_factory=list)
    has_older: bool = True
    loaded: bool = False

    @property
    def first_seq(self) -> int | None:
        seqs = [e.seq for e in self.entries if e.kind == "message"]
        return min(seqs) if seqs else None

    @property
    def last_seq(self) -> int:
        return max((e.seq for e in self.entries if e.kind == "message"), default=0)

    def seqs(self) -> set[int]:
        return {e.seq for e in self.entries if e.kind == "message"}

    def add_message(self, msg: CachedMessage) -> bool:
        """Place `msg` by sequence number; drop the pending copy of it. False
        if it was already shown."""
        self.entries = [e for e in self.entries if not (e.kind == "pending" and e.txn == msg.txn)]
        if msg.seq in self.seqs():
            return False
        entry = Entry(
            "message",
            msg.ts_ms,
            msg.text or "",
            sender=msg.sender,
            seq=msg.seq,
            txn=msg.txn,
            error=msg.error,
        )
        later = [i for i, e in enumerate(self.entries) if e.kind == "message" and e.seq > msg.seq]
        if later:
            self.entries.insert(later[0], entry)
        else:
            self.entries.append(entry)
        return True

    def prepend(self, msgs: list[CachedMessage]) -> int:
        """Add an older page; returns how many were new."""
        known = self.seqs()
        fresh = [
            Entry("message", m.ts_ms, m.text or "", m.sender, m.seq, m.txn, m.error)
            for m in msgs
            if m.seq not in known
        ]
        self.entries = fresh + self.entries
        return len(fresh)

    def add_pending(self, txn: str, text: str, created_ms: int) -> None:
        if any(e.txn == txn for e in self.entries):
            return
        self.entries.append(Entry("pending", created_ms, text, txn=txn))

    def fail(self, txn: str, reason: str) -> None:
        for e in self.entries:
            if e.kind == "pending" and e.txn == txn:
                e.error = reason

    def notice(self, text: str, ts_ms: int, level: NoticeLevel = "info") -> None:
        self.entries.append(Entry("notice", ts_ms, text, level=level))

    def ordered(self) -> list[Entry]:
        """Messages and notices as they came, the outbox last (it is not yet
        part of the room's order)."""
        return [e for e in self.entries if e.kind != "pending"] + [
            e for e in self.entries if e.kind == "pending"
        ]


def entry_line(e: Entry, me: str, aliases: Mapping[str, str]) -> Text:
    if e.kind == "notice":
        style = {"info": "dim", "warning": "bold yellow", "error": "bold red"}[e.level]
        mark = {"info": "--", "warning": "!!", "error": "!!"}[e.level]
        return Text(f"{clock_time(e.ts_ms)} {mark} {e.text}", style=style)
    sender = e.sender or me
    mine = sender == me
    name = aliases.get(sender, sender)
    line = Text(clock_time(e.ts_ms) + " ", style="dim")
    line.append("»" if mine else " ", style="bold")
    line.append(name, style=f"bold {name_colour(sender)}" + (" underline" if mine else ""))
    line.append(": ")
    indent = " " * (len(clock_time(e.ts_ms)) + 4 + len(name))
    if e.kind == "message" and e.error is not None:
        line.append(f"⚠ unreadable message ({e.error})", style="bold reverse red")
        return line
    body = e.text.replace("\n", "\n" + indent)
    if e.kind == "pending":
        line.append(body, style="dim italic")
        if e.error is None:
            line.append("  ◌ pending", style="dim")
        else:
            line.append(f"  ✗ not sent: {e.error}", style="bold red")
        return line
    line.append(body)
    return line


def render_log(log: RoomLog, me: str, aliases: Mapping[str, str]) -> Text:
    out = Text()
    last_day: str | None = None
    for e in log.ordered():
        if e.kind != "notice":
            d = day(e.ts_ms)
            if d != last_day:
                out.append(f"──── {day_label(e.ts_ms)} ────\n", style="bold dim")
                last_day = d
        out.append_text(entry_line(e, me, aliases))
        out.append("\n")
    if out.plain.endswith("\n"):
        out.right_crop(1)
    return out


class Timeline(VerticalScroll):
    """Shows a `RoomLog`; scrolling to the top asks for the previous page."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.log_model: RoomLog | None = None
        self.loading_older = False
        self._me = ""
        self._aliases: Mapping[str, str] = {}

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("", id="timeline-body", markup=False)

    def plain(self) -> str:
        """What the timeline shows, as plain text."""
        if self.log_model is None:
            return ""
        return render_log(self.log_model, self._me, self._aliases).plain

    def show(
        self,
        log: RoomLog,
        me: str,
        aliases: Mapping[str, str],
        *,
        anchor: str = "end",
    ) -> None:
        """Render `log`. anchor "end": follow the newest message if the view
        was at the bottom; "keep": keep the view on what it showed (an older
        page was added above)."""
        at_end = self.scroll_y >= self.max_scroll_y - 1 or self.log_model is not log
        before_height = self.virtual_size.height
        before_y = self.scroll_y
        self.log_model = log
        self._me, self._aliases = me, aliases
        self.query_one("#timeline-body", Static).update(render_log(log, me, aliases))
        if anchor == "keep":

            def restore() -> None:
                grown = self.virtual_size.height - before_height
                self.scroll_to(y=before_y + max(grown, 0), animate=False, immediate=True)

            self.call_after_refresh(restore)
        elif at_end:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def want_older(self) -> None:
        if self.log_model is not None and self.log_model.has_older and not self.loading_older:
            self.post_message(OlderWanted())

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self.want_older()

    def page_up(self) -> None:
        if self.scroll_y <= 0:
            self.want_older()
        else:
            self.scroll_page_up(animate=False)
