"""One room's log as the timeline draws it: each entry a `Block` of rows
that wraps at the width it is drawn at, the whole a `LogView` that gives
any row by its number, so that the timeline (`widgets/timeline.py`) draws
only the rows in view.

Every text here is another person's (or a server's) and hostile: it is drawn
through `safe_text` (no control character, escape sequence or bidi control
reaches the terminal, no markup is parsed), and only an entry's first row
starts in column 0 (`Block`), so a message cannot forge another one. Pure:
no Textual, no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.text import Text

from curvechat.protocol.text import split_lines
from curvechat.tui.fold import fold, folded_note
from curvechat.tui.format import (
    clock_time,
    day,
    day_label,
    name_colour,
    safe_text,
    shown_name,
)
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
    wrapped: dict[int, list[Text]] = field(default_factory=dict, compare=False, repr=False)
    """The rows at the width on screen (see `LogView`): a block never
    changes, so it is wrapped once for each width."""
    drawn: dict[int, list[Segment]] = field(default_factory=dict, compare=False, repr=False)
    """The rows of `wrapped` drawn so far (those that were on screen), by row."""

    def height(self, width: int, console: Console) -> int:
        """How many rows the block takes at `width`."""
        return len(self._wrapped(width, console))

    def row(self, n: int, width: int, console: Console) -> list[Segment]:
        """Row `n` at `width` as segments, drawn once."""
        rows = self._wrapped(width, console)
        drawn = self.drawn.get(n)
        if drawn is None:
            drawn = self.drawn[n] = _row_segments(rows[n], width, console)
        return drawn

    def _wrapped(self, width: int, console: Console) -> list[Text]:
        rows = self.wrapped.get(width)
        if rows is None:
            rows = self.rows(width, console)
            self.wrapped.clear()  # only the width on screen is kept
            self.drawn.clear()
            self.wrapped[width] = rows
        return rows

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
    (so wrapped rows stay indented however the terminal is resized), row by
    row: the timeline asks for the rows on screen only (`row`), so what a
    redraw costs does not grow with the rows above and below them."""

    def __init__(self, items: list[Text | Block]) -> None:
        self.items = items
        self._width = 0
        self._starts: list[int] = []
        """The first row of each item at `_width`, and after the last, the rows in all."""

    def plain_rows(self) -> list[Text]:
        return [r for i in self.items for r in (i.rows() if isinstance(i, Block) else [i])]

    def height(self, width: int, console: Console) -> int:
        """The rows of the whole log at `width` (each block wrapped once for
        each width; a block the last view wrapped is not wrapped again)."""
        width = max(width, len(CONTINUATION) + 2)
        if width != self._width or not self._starts:
            starts, total = [], 0
            for item in self.items:
                starts.append(total)
                total += item.height(width, console) if isinstance(item, Block) else 1
            starts.append(total)
            self._width, self._starts = width, starts
        return self._starts[-1]

    def row(self, y: int, width: int, console: Console) -> list[Segment]:
        """Row `y` at `width` as segments (none past the last row)."""
        if not 0 <= y < self.height(width, console):
            return []
        width = self._width
        index = bisect.bisect_right(self._starts, y) - 1
        item = self.items[index]
        if isinstance(item, Block):
            return item.row(y - self._starts[index], width, console)
        return _row_segments(item, width, console)  # a day separator

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, len(CONTINUATION) + 2)
        for item in self.items:
            if isinstance(item, Block):
                for n in range(item.height(width, console)):
                    yield from item.row(n, width, console)
                    yield Segment.line()
            else:
                yield from _row_segments(item, width, console)  # a day separator
                yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(MIN_BODY, options.max_width), options.max_width)


def _row_segments(row: Text, width: int, console: Console) -> list[Segment]:
    """One row as segments, cropped if it is wider than `width`."""
    if row.cell_len > width:
        row = row.copy()
        row.truncate(width, overflow="crop")
    # Text.render drops the base style of a row without spans: apply it here
    return list(Segment.apply_style(row.render(console), console.get_style(row.style)))


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
    name = safe_text(shown_name(sender, aliases))
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
