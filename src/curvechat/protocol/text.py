"""Untrusted text made safe to show on a terminal.

Message texts, a server's error messages and anything echoed back from what
a user typed are hostile: shown raw, they can drive the terminal (``ESC [2J``
clears the screen, ``ESC ]52;c;…`` writes the clipboard, ``ESC ]8;;URL``
makes a link, U+009B is a one-byte CSI), move the cursor (CR, backspace,
vertical tab, form feed), reorder what the reader sees (bidi overrides), or
start what looks like a new line of output. Every front end (the terminal
client, the command line) passes such text through this module, and only
this module decides what is safe; it is pure, with no I/O, and must never
import a UI or transport library.

The rules
---------
A character is shown as itself if Python calls it printable
(`str.isprintable`), or if it is a space, a private-use or an unassigned
code point (these draw as a glyph or a blank and cannot act on the
terminal). Everything else becomes a *placeholder*: its escape as Python
writes it, ``\\t``, ``\\n``, ``\\r``, else ``\\xHH``, ``\\uHHHH`` or
``\\UHHHHHHHH``, in plain ASCII. That covers:

- C0 controls U+0000–U+001F (ESC, CR, BS, BEL, NUL, TAB, VT, FF, …), DEL
  U+007F and C1 controls U+0080–U+009F (CSI U+009B, NEL U+0085): so an
  escape sequence shows as ``\\x1b[2J`` and does nothing;
- bidi controls: the embeddings and overrides U+202A–U+202E, the isolates
  U+2066–U+2069, the marks U+200E, U+200F and U+061C;
- every other format character (category Cf): zero-width space U+200B, word
  joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, tag characters
  U+E0000–U+E007F, interlinear annotation U+FFF9–U+FFFB, …;
- the line and paragraph separators U+2028 and U+2029, and lone surrogates
  (which would also make printing fail).

Two exceptions keep ordinary writing intact:

- ZERO WIDTH JOINER U+200D and ZERO WIDTH NON-JOINER U+200C stay when they
  sit between two visible characters: emoji sequences (woman ZWJ laptop, a
  rainbow flag) and Persian, Arabic and Indic spelling need them, and inside
  text they can neither drive a terminal nor start a line. Alone, doubled,
  at either end of a line or next to a space they join nothing and only
  hide: they become placeholders, so a message that looks empty shows what
  it holds.
  User names and room ids cannot hold any of these (the protocol restricts
  them to ``a-z 0-9 . _ -``, see `limits`), so no name can hide a joiner; a
  local alias (``/nick``) is shown through `visible` like any other text.
- Tag characters stay only inside an emoji subdivision flag (a black flag,
  a region and subdivision code of at most six tags, then CANCEL TAG: the
  flags of England, Scotland and Wales); anywhere else they are invisible
  carriers of hidden ASCII and become placeholders.

Variation selectors and combining marks are kept (emoji presentation and
many scripts need them); they draw on the character before them and cannot
move the cursor. Placeholders are not themselves escaped: a user who types
a backslash followed by ``x1b`` shows the same six characters, which is
harmless. The terminal client draws placeholders in reverse video, so there
they are told apart.

Line breaks
-----------
`visible` is for one-line places (names, errors, status): a line break is a
placeholder too. `visible_lines` splits a multi-line text at ``\\n`` (and
``\\r\\n``) and makes each line visible; the caller shows every line after
the first as a continuation (indented and marked), so no text can start
what looks like a new message. Vertical tab, form feed, NEL and U+2028/9
are not line breaks here: they become placeholders.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Final

JOINERS: Final = frozenset("\u200c\u200d")
"""Zero-width (non-)joiners: kept between two visible characters."""

UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
"""The Unicode categories of every character that is not shown as itself
(bar joiners and flag tags in context): controls, format characters, line
and paragraph separators, surrogates."""

_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_FLAG: Final = re.compile(
    "\U0001f3f4[\U000e0061-\U000e007a]{2}[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,4}\U000e007f"
)


def placeholder(ch: str) -> str:
    """The visible stand-in for one unsafe character: its Python escape."""
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _shown(ch: str) -> bool:
    return ch.isprintable() or unicodedata.category(ch) not in UNSAFE_CATEGORIES


_STAND_INS: dict[str, str] = {}
"""`placeholder` of the unsafe characters met so far, "" for the non-printable
ones that are shown (a text of thousands of controls is one dictionary
lookup a character, not two calls)."""

_MAX_STAND_INS: Final = 4096


def _stand_in(ch: str) -> str:
    """`placeholder(ch)` if `ch` is not shown as itself (joiners and flag
    tags aside), else ""."""
    found = _STAND_INS.get(ch)
    if found is None:
        found = "" if _shown(ch) else placeholder(ch)
        if len(_STAND_INS) < _MAX_STAND_INS:
            _STAND_INS[ch] = found
    return found


def _joins(text: str, i: int) -> bool:
    """Whether the joiner at `i` sits between two visible characters."""
    if i == 0 or i + 1 >= len(text):
        return False
    before, after = text[i - 1], text[i + 1]
    return all(c.isprintable() and not c.isspace() for c in (before, after))


def visible_parts(text: str) -> Iterator[tuple[str, bool]]:
    """`text` as runs of (shown text, False) and (placeholders, True), in
    order, each run as long as it goes; joining them gives `visible(text)`.
    A line break is a placeholder here: split a multi-line text with
    `split_lines` first."""
    if text.isprintable():
        if text:
            yield text, False
        return
    # the tags inside a subdivision flag stay (a set: a text of thousands of
    # flags and controls must not cost a scan of every flag per control)
    flagged = (
        {i for m in _FLAG.finditer(text) for i in range(m.start() + 1, m.end())}
        if "\U0001f3f4" in text
        else set()
    )
    start = 0
    held: list[str] = []  # placeholders of a run of unsafe characters: one part
    for i, ch in enumerate(text):
        if ch.isprintable():
            continue
        stand_in = _stand_in(ch)
        if not stand_in:
            continue
        if ch in JOINERS and _joins(text, i):
            continue
        if i in flagged:
            continue
        if start < i:
            if held:
                yield "".join(held), True
                held = []
            yield text[start:i], False
        held.append(stand_in)
        start = i + 1
    if held:
        yield "".join(held), True
    if start < len(text):
        yield text[start:], False


def visible(text: str) -> str:
    """`text` as one safe line: every character that could drive a terminal,
    move the cursor, reorder or hide text (line breaks included) replaced by
    its placeholder."""
    if text.isprintable():
        return text
    return "".join(part for part, _ in visible_parts(text))


def split_lines(text: str) -> list[str]:
    """`text` split at its line breaks: ``\\n`` and ``\\r\\n`` only (never
    fewer than one line; each line still unsafe)."""
    return text.replace("\r\n", "\n").split("\n")


def visible_lines(text: str) -> list[str]:
    """The lines of `text` (see `split_lines`), each made `visible`."""
    return [visible(line) for line in split_lines(text)]


CLIP: Final = 80
"""How much of a text a user gave an error message echoes."""


def clip(text: str, limit: int = CLIP) -> str:
    """`text` cut to its first `limit` characters, with "…" when it was
    longer: an error that echoes what was typed (a name, a path, a room id)
    says which, not all of a 100 kB argument. Still unsafe: pass the result
    through `visible` (or `!r`) like the text itself."""
    return text if len(text) <= limit else text[:limit] + "…"
