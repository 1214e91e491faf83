"""The centre of the chat screen: one room's history as text.

A `RoomLog` (`tui/roomlog.py`) is the model; `render_log` turns it into lines; the
`Timeline` widget shows them and asks for older pages when scrolled to the
top. A message that failed to decrypt or verify is shown with a marker, never
hidden.

Every text here is another person's (or a server's) and hostile: it is drawn
through `safe_text` (no control character, escape sequence or bidi control
reaches the terminal, no markup is parsed), and only an entry's first row
starts in column 0 (`Block`), so a message cannot forge another one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from curvechat.protocol.text import split_lines
from curvechat.tui.fold import fold, folded_note
from curvechat.tui.format import clock_time, day, day_label, name_colour, safe_text
from curvechat.tui.messages import FollowingAgain, OlderWanted, StoppedFollowing
from curvechat.tui.roomlog import Entry, RoomLog

CONTINUATION = "│ "
"""Drawn before each further line of a multi-line text, under its first line."""

MIN_BODY = 16
"""Fewest columns a message body gets; a longer head goes on a row of its own."""


@dataclass(frozen=True, slots=True)
class Block:
    """One entry as drawn: a `head` ("09:00  bob: ") followed by the lines of
    its text. Every row after the first (a further line of the text, marked
    with `CONTINUATION`, or the wrap of a long line) starts under the text,
    never in column 0: no text can pass for a new entry of the timeline."""

    head: Text
    lines: list[Text]
    drawn: dict[int, list[Segment]] = field(default_factory=dict, compare=False, repr=False)
    """The segments already drawn, by width (see `LogView`)."""

    def segments(self, width: int, console: Console) -> list[Segment]:
        """The rows at `width` as segments, each row ending in a new line:
        made once for each width, since a block never changes."""
        drawn = self.drawn.get(width)
        if drawn is None:
            drawn = [
                s for row in self.rows(width, console) for s in _row_segments(row, width, console)
            ]
            self.drawn.clear()  # only the width on screen is kept
            self.drawn[width] = drawn
        return drawn

    def rows(self, width: int | None = None, console: Console | None = None) -> list[Text]:
        """The rows to draw at `width` columns (None: one row per line, no wrapping)."""
        if width is None or console is None:
            lead = self._lead(self.head.cell_len, marked=True)
            return [self.head + self.lines[0], *(lead + ln for ln in self.lines[1:])]
        indent = min(self.head.cell_len, max(width - MIN_BODY, len(CONTINUATION) + 1))
        out: list[Text] = []
        for n, line in enumerate(self.lines):
            room = width - indent
            pieces = [line] if line.cell_len <= room else line.wrap(console, room, overflow="fold")
            for k, piece in enumerate(pieces):
                if n == 0 and k == 0:
                    if self.head.cell_len <= indent:
                        out.append(self.head + piece)
                        continue
                    out.append(self.head.copy())
                out.append(self._lead(indent, marked=n > 0 and k == 0) + piece)
        return out

    def _lead(self, indent: int, *, marked: bool) -> Text:
        """What a row after the first starts with: `indent` columns, ending in
        `CONTINUATION` if the row starts a further line of the text. It has
        the head's style, as the first row has."""
        if not marked:
            return Text(" " * indent, style=self.head.style)
        lead = Text(" " * max(0, indent - len(CONTINUATION)), style=self.head.style)
        lead.append(CONTINUATION, style="dim")
        return lead


class LogView:
    """A rendered room log that wraps itself at the width it is drawn at
    (so wrapped rows stay indented however the terminal is resized)."""

    def __init__(self, items: list[Text | Block]) -> None:
        self.items = items

    def plain_rows(self) -> list[Text]:
        return [r for i in self.items for r in (i.rows() if isinstance(i, Block) else [i])]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, len(CONTINUATION) + 2)
        for item in self.items:
            if isinstance(item, Block):
                yield from item.segments(width, console)
            else:
                yield from _row_segments(item, width, console)  # a day separator

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(MIN_BODY, options.max_width), options.max_width)


def _row_segments(row: Text, width: int, console: Console) -> list[Segment]:
    """One row as segments and a new line, cropped if it is wider than `width`."""
    if row.cell_len > width:
        row = row.copy()
        row.truncate(width, overflow="crop")
    # Text.render drops the base style of a row without spans: apply it here
    return [
        *Segment.apply_style(row.render(console), console.get_style(row.style)),
        Segment.line(),
    ]


def entry_block(e: Entry, me: str, aliases: Mapping[str, str]) -> Block:
    """An entry as a `Block`: every text from others, and every alias, made
    safe (placeholders for controls, escapes and bidi; no markup)."""
    if e.kind == "notice":
        style = {"info": "dim", "warning": "bold yellow", "error": "bold red"}[e.level]
        mark = {"info": "--", "warning": "!!", "error": "!!"}[e.level]
        head = Text(f"{clock_time(e.ts_ms)} {mark} ", style=style)
        return Block(head, [safe_text(line, style) for line in split_lines(e.text)])
    sender = e.sender or me
    mine = sender == me
    name = safe_text(aliases.get(sender, sender))
    head = Text(clock_time(e.ts_ms) + " ", style="dim")
    head.append("»" if mine else " ", style="bold")
    name.stylize(f"bold {name_colour(sender)}" + (" underline" if mine else ""))
    head.append_text(name)
    head.append(": ")
    if e.kind == "message" and e.error is not None:
        why = safe_text(f"⚠ unreadable message ({e.error})", "bold reverse red")
        return Block(head, [why])
    style = "dim italic" if e.kind == "pending" else ""
    shown = fold(e.text, style)
    lines = shown.lines
    if e.kind == "pending":
        if e.error is None and not mine:
            lines[-1].append("  ◌ peer-to-peer · not on the server yet", style="dim")
        elif e.error is None:
            lines[-1].append("  ◌ pending", style="dim")
        else:
            lines[-1].append_text(safe_text(f"  ✗ not sent: {e.error}", "bold red"))
    if not shown.cut:
        return Block(head, lines)
    return Block(head, [*lines, Text(folded_note(shown), style="dim")])


def is_folded(e: Entry) -> bool:
    """The timeline shows `e` folded (`/more` reads it)."""
    unreadable = e.kind == "message" and e.error is not None
    return e.kind != "notice" and not unreadable and fold(e.text).cut


class BlockMemo:
    """The blocks of the entries drawn last time: each entry is made into a
    `Block` (and drawn, see `Block.segments`) once, not on every redraw, so
    a redraw costs little more than the rows it shows, whatever the texts."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[Entry, tuple[object, ...], str, Block]] = {}
        self._used: dict[int, tuple[Entry, tuple[object, ...], str, Block]] = {}

    def block(self, e: Entry, me: str, aliases: Mapping[str, str]) -> tuple[str, Block]:
        """The day of `e` and its block, made again only if what it shows changed."""
        name = aliases.get(e.sender or me)
        key = (e.kind, e.ts_ms, e.text, e.sender, e.error, e.level, me, name)
        made = self._made.get(id(e))
        if made is None or made[0] is not e or made[1] != key:
            made = (e, key, day(e.ts_ms), entry_block(e, me, aliases))
        self._used[id(e)] = made
        return made[2], made[3]

    def done(self) -> None:
        """A redraw ended: keep only the blocks of the entries it drew."""
        self._made, self._used = self._used, {}


def render_log(
    log: RoomLog, me: str, aliases: Mapping[str, str], memo: BlockMemo | None = None
) -> LogView:
    memo = memo or BlockMemo()
    items: list[Text | Block] = []
    last_day: str | None = None
    for e in log.ordered():
        d, block = memo.block(e, me, aliases)
        if e.kind != "notice" and d != last_day:
            items.append(Text(f"──── {day_label(e.ts_ms)} ────", style="bold dim"))
            last_day = d
        items.append(block)
    memo.done()
    return LogView(items)


Anchor = Literal["follow", "newest", "keep"]


class Timeline(VerticalScroll):
    """Shows a `RoomLog`, following its newest message; scrolling up to the
    top asks for the previous page.

    Following is Textual's anchor: while the view follows, every layout
    (a message added, a long message wrapped, the input line growing or
    shrinking, a resize) keeps the bottom in view, whatever the order in
    which they happen. Scrolling up stops following; scrolling back to the
    bottom, opening a room and sending a message follow again."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.log_model: RoomLog | None = None
        self.loading_older = False
        self.following = True
        """The view sticks to the newest message (the user has not scrolled up)."""
        self.behind = False
        """Messages came in that are not drawn yet: the user reads older ones."""
        self._me = ""
        self._aliases: Mapping[str, str] = {}
        self._memo = BlockMemo()

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("", id="timeline-body", markup=False)

    def on_mount(self) -> None:
        self.follow()

    def plain(self) -> str:
        """What the timeline shows, as plain text: one row for each line of
        an entry (not wrapped at the widget's width)."""
        if self.log_model is None:
            return ""
        view = render_log(self.log_model, self._me, self._aliases)
        return "\n".join(row.plain for row in view.plain_rows())

    def show(
        self,
        log: RoomLog,
        me: str,
        aliases: Mapping[str, str],
        *,
        anchor: Anchor = "follow",
    ) -> None:
        """Render `log`. anchor "follow": stay with the newest message if the
        view follows it, else stay put; "newest": go to the newest message
        and follow it (also whenever `log` is another room's); "keep": keep
        the view on what it showed (an older page was added above)."""
        switched = self.log_model is not log
        before_height = self.virtual_size.height
        before_y = self.scroll_y
        self.log_model = log
        self._me, self._aliases = me, aliases
        view = render_log(log, me, aliases, self._memo)
        self.query_one("#timeline-body", Static).update(view)
        self.behind = False
        self.border_subtitle = ""
        if anchor == "newest" or switched:
            self.follow()
        elif anchor == "keep":

            def restore() -> None:
                grown = self.virtual_size.height - before_height
                self.scroll_to(y=before_y + max(grown, 0), animate=False, immediate=True)

            self.call_after_refresh(restore)

    def mark_behind(self) -> None:
        """Messages came in while the user reads older ones: say so, and draw
        them when the view is back at the bottom (`FollowingAgain`)."""
        self.behind = True
        self.border_subtitle = "new messages below ↓"

    def follow(self) -> None:
        """Go to the newest message and stay with it."""
        was = self.following
        self.following = True
        self.anchor()
        if not was:
            self._caught_up()

    def _caught_up(self) -> None:
        """The view follows again: what came in meanwhile, drawn or not, or
        left to the cache (a held log), is the screen's to bring in."""
        log = self.log_model
        if self.behind or (log is not None and log.held):
            self.post_message(FollowingAgain())

    def release_anchor(self) -> None:
        # Textual calls this when the user scrolls (keys, wheel, scrollbar).
        super().release_anchor()
        if self.following:
            self.post_message(StoppedFollowing())
        self.following = False

    def want_older(self) -> None:
        log = self.log_model
        if log is not None and log.loaded and log.has_older and not self.loading_older:
            self.post_message(OlderWanted())

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)  # re-anchors at the bottom
        if not self.following and self.is_anchored and new_value >= self.max_scroll_y:
            self.following = True
            self._caught_up()
        # Only the user's scrolling asks for older messages: not a view that
        # reached the top because another room's shorter log replaced it.
        if new_value <= 0 < old_value and not self.following:
            self.want_older()

    def page_up(self) -> None:
        if self.scroll_y <= 0:
            self.want_older()
        else:
            self.scroll_page_up(animate=False)
