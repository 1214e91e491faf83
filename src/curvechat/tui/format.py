"""How things look as text: times, dates, room labels, stable name colours,
and untrusted text made safe (`safe_text`).

Pure functions, so the timeline, the rooms list and the tests agree.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

from rich.text import Text

from curvechat.protocol.limits import dm_members
from curvechat.protocol.text import visible_parts

NO_ROOM = ""
"""The chat screen's "room" when you are in none."""

PLACEHOLDER_STYLE = "reverse"
"""How a placeholder for an unsafe character (``\\x1b``) is drawn, so it is
told apart from the same characters typed."""

NAME_COLOURS = (
    "#e06c75",
    "#98c379",
    "#e5c07b",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#d19a66",
    "#b5bd68",
    "#f0a6ca",
    "#8abeb7",
)


def name_colour(user: str) -> str:
    """The same colour for a user in every session and on every machine."""
    digest = hashlib.blake2b(user.encode(), digest_size=2).digest()
    return NAME_COLOURS[int.from_bytes(digest, "big") % len(NAME_COLOURS)]


def safe_text(text: str, style: str = "") -> Text:
    """Untrusted `text` as one line of Rich text: every character that could
    drive the terminal or break the line is a placeholder (see
    `curvechat.protocol.text`), drawn in reverse video. Rich `Text` is never
    parsed for markup, so ``[bold]`` or ``[@click=…]`` in it stays as typed."""
    out = Text(style=style)
    for part, unsafe in visible_parts(text):
        out.append(part, style=PLACEHOLDER_STYLE if unsafe else None)
    return out


def clock_time(ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ms / 1000))


def day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ms / 1000))


def day_label(ms: int) -> str:
    return time.strftime("%A %d %B %Y", time.localtime(ms / 1000))


ALIAS_MARK = "~"
"""Drawn after every alias (`bobby~`). No user or room name has it (they are
`a-z0-9._-`) and no alias may, so a name on screen can never pass for an
alias, nor an alias for someone's name, whoever registers it later."""


def shown_name(name: str, aliases: Mapping[str, str]) -> str:
    """How a user (or a '#room') is named on screen: its alias, marked, or itself."""
    alias = aliases.get(name)
    return name if alias is None else alias + ALIAS_MARK


def room_label(room: str, me: str, aliases: Mapping[str, str] | None = None) -> str:
    """'@bob' for my direct-message room with bob, '#general' for a group;
    with `aliases` (user or '#room' → alias), the alias where there is one
    (`@bobby~`, `crew~`)."""
    aliases = aliases or {}
    pair = dm_members(room)
    if pair is not None and me in pair:
        other = pair[1] if pair[0] == me else pair[0]
        return f"@{shown_name(other, aliases)}"
    return shown_name(f"#{room}", aliases)  # (a server may list another pair's room)


def unalias(name: str, aliases: Mapping[str, str]) -> str:
    """What the alias `name` stands for (a user, or '#room'), typed bare or
    as drawn (`bobby~`, and `@bobby~` for a user; `@bobby` is the user
    bobby's room); else `name`."""
    bare = name.removesuffix(ALIAS_MARK)
    dm = bare != name and bare.startswith("@")
    bare = bare.removeprefix("@") if dm else bare
    for key, value in aliases.items():
        if value == bare and not (dm and key.startswith("#")):
            return key
    return name


def resolve_room(name: str, me: str, rooms: list[str]) -> str | None:
    """The room id for '#general', 'general' or '@bob', if it is one of `rooms`."""
    name = name.strip()
    for room in rooms:
        if name in (room, room_label(room, me)) or (name.startswith("#") and name[1:] == room):
            return room
    return None
