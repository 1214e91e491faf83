"""How much of one message the timeline draws: a long message is folded.

The timeline wraps every entry it holds when a room is opened and when the
view's width changes, so what one message costs must be bounded, whatever
its sender put in it: a text of 16,000 line breaks would otherwise be
16,000 rows, wrapped again at every resize. A message of more than `FOLD_LINES` lines, or more
than `FOLD_CELLS` columns of visible text (a placeholder counts at its
width), shows its start; the timeline then says how long it is and how to
read it all (`/more`, the reader screen).

Whether a text folds depends on the text alone, never on the terminal's
width, so the n-th folded message of a room is the same one on every screen
size. Pure: no Textual, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from rich.text import Text

from curvechat.protocol.text import split_lines
from curvechat.tui.format import safe_text

FOLD_LINES: Final = 16
"""Most lines of one message the timeline shows."""

FOLD_CELLS: Final = 1_600
"""Most columns of visible text of one message the timeline shows (twenty
rows of 80 columns)."""


@dataclass(frozen=True, slots=True)
class Folded:
    lines: list[Text]
    """The lines shown, made safe (see `safe_text`)."""
    cut: bool
    """Some of the text is not among `lines`."""
    total_lines: int
    total_chars: int


def fold(text: str, style: str = "") -> Folded:
    """The start of `text` the timeline shows. Only the first `FOLD_CELLS`
    characters are ever made safe, so the cost is bounded too."""
    total_lines = text.count("\n") + 1  # "\r\n" is one break, and has one "\n"
    cut = total_lines > FOLD_LINES or len(text) > FOLD_CELLS
    lines: list[Text] = []
    budget = FOLD_CELLS
    for piece in split_lines(text[:FOLD_CELLS])[:FOLD_LINES]:
        if budget <= 0:
            cut = True
            break
        line = safe_text(piece, style)
        if line.cell_len > budget:
            line.truncate(budget)
            cut = True
        budget -= line.cell_len
        lines.append(line)
    return Folded(lines, cut, total_lines, len(text))


def folded_note(f: Folded) -> str:
    """The line under a folded message: its size, and how to read it."""
    return f"⋯ folded: {_size(f.total_lines, f.total_chars)} · /more reads it whole"


def text_size(text: str) -> str:
    """The size of `text` as the timeline and the reader say it: "3 lines,
    120 characters"."""
    return _size(text.count("\n") + 1, len(text))


def _size(lines: int, chars: int) -> str:
    return f"{'1 line' if lines == 1 else f'{lines:,} lines'}, {chars:,} characters"
