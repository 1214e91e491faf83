"""How the command line prints text it does not control.

Message texts, server error messages, log records and anything echoed from
user input go through `curvechat.protocol.text` before they reach stdout or
stderr: no control character, escape sequence or bidi control reaches the
terminal, and a message's further lines are printed behind `CONTINUATION`,
so no text can pass for a line of its own (a line of `history` or `tail`
starts with ``[`` only where a message starts). ``--json`` keeps the exact
text: `json_line` writes every unsafe character as a ``\\u`` escape (JSON
itself escapes only C0 controls; DEL, C1 controls, bidi and other format
characters would otherwise reach the terminal raw).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from typing import Any

from curvechat.protocol.text import UNSAFE_CATEGORIES, visible, visible_lines

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

CONTINUATION = "  │ "
"""Starts every further line of a multi-line message."""


def message_line(when: str, seq: int, sender: str, text: str | None, error: str | None) -> str:
    """``[when] #seq sender: text``, with each further line of `text` (or
    the reason it could not be read) as a continuation line."""
    lines = visible_lines(text or "") if error is None else [f"⚠ [{visible(error)}]"]
    head = f"[{when}] #{seq} {visible(sender)}: {lines[0]}"
    return "\n".join([head, *(CONTINUATION + line for line in lines[1:])])


def json_line(obj: Any) -> str:
    """`obj` as one line of JSON that parses back to exactly `obj`, with no
    character in it that could act on a terminal (non-ASCII text stays
    readable)."""
    out = json.dumps(obj, ensure_ascii=False)
    if out.isprintable():
        return out
    return "".join(_json_escape(ch) for ch in out)


def _json_escape(ch: str) -> str:
    if ch.isprintable() or unicodedata.category(ch) not in UNSAFE_CATEGORIES:
        return ch
    cp = ord(ch)
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def error_line(code: str, message: str) -> str:
    """The one line a failed command prints on stderr."""
    return f"curvechat: error [{visible(code)}]: {visible(message)}"


class VisibleFormatter(logging.Formatter):
    """A log formatter that cannot be made to drive the terminal or forge a
    record: the record's line made visible, and each line of an attached
    traceback or stack behind `CONTINUATION` (an exception's message may hold
    a newline, and its second line would otherwise start a line)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        extra: list[str] = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        elif record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        more = [CONTINUATION + visible(ln) for block in extra for ln in block.split("\n")]
        return "\n".join([visible(self.formatMessage(record)), *more])


def log_handler(handler: logging.Handler) -> logging.Handler:
    """`handler`, writing `LOG_FORMAT` through a `VisibleFormatter`."""
    handler.setFormatter(VisibleFormatter(LOG_FORMAT))
    return handler
