"""Slash commands: their table, parsing and completion. No I/O, no Textual.

The chat screen runs a parsed `Invocation`; everything a user can get wrong
in the line itself (unknown command, missing or extra arguments) is a
`CommandError` with a one-line explanation, raised here; an unknown command
names the nearest known one. The names IRC and weechat users type (/join,
/list, /msg, /p, /g, /a, /exit) are here too (docs/tui.md has the table).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from curvechat.protocol.errors import CurvechatError

ArgKind = Literal["room", "user", "users", "text", "word"]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    args: tuple[tuple[str, ArgKind, bool], ...] = ()
    """(name, kind, required); a "users" or "text" argument takes the rest."""
    aliases: tuple[str, ...] = ()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "create",
        "/create ROOM [USER ...]",
        "create a room, with these members",
        (("ROOM", "word", True), ("USER", "users", False)),
    ),
    CommandSpec(
        "join",
        "/join ROOM",
        "open a room you are in (#room, @user), or create it (asks first)",
        (("ROOM", "room", True),),
        aliases=("j",),
    ),
    CommandSpec(
        "switch",
        "/switch ROOM",
        "open a room you are in (#room, @user)",
        (("ROOM", "room", True),),
    ),
    CommandSpec(
        "g",
        "/g ROOM TEXT",
        "send TEXT to ROOM and stay where you are",
        (("ROOM", "room", True), ("TEXT", "text", True)),
    ),
    CommandSpec(
        "msg",
        "/msg USER TEXT",
        "send USER a direct message and stay where you are",
        (("USER", "user", True), ("TEXT", "text", True)),
        aliases=("p",),
    ),
    CommandSpec("invite", "/invite USER", "add a member to this room", (("USER", "user", True),)),
    CommandSpec(
        "remove",
        "/remove USER",
        "remove a member (the room key rotates)",
        (("USER", "user", True),),
        aliases=("kick",),
    ),
    CommandSpec("leave", "/leave", "leave this room", aliases=("part", "close")),
    CommandSpec(
        "dm",
        "/dm USER [TEXT]",
        "open the direct-message room with USER (and send TEXT)",
        (("USER", "user", True), ("TEXT", "text", False)),
        aliases=("query",),
    ),
    CommandSpec("rooms", "/rooms", "list your rooms", aliases=("list",)),
    CommandSpec("members", "/members", "list this room's members", aliases=("names",)),
    CommandSpec(
        "whois",
        "/whois USER",
        "a user's key fingerprint and safety number",
        (("USER", "user", True),),
    ),
    CommandSpec(
        "keys",
        "/keys [USER] | /keys accept USER | /keys verify USER",
        "fingerprints and safety numbers; accept a changed key",
        (("USER", "user", False), ("USER", "user", False)),
    ),
    CommandSpec(
        "contacts",
        "/contacts [add USER ... | remove USER ... | only | anyone]",
        "your contacts; only: only they may put you in a room; anyone: anyone may",
        (("ACTION", "word", False), ("USER", "users", False)),
    ),
    CommandSpec(
        "nick",
        "/nick USER [ALIAS]",
        "show USER as ALIAS on this machine (no ALIAS: clear it)",
        (("USER", "user", True), ("ALIAS", "word", False)),
    ),
    CommandSpec(
        "a",
        "/a NAME [ALIAS]",
        "an alias: a display name of your own for a user (bob) or a room (#team),"
        " kept on this machine only; no ALIAS clears it",
        (("NAME", "word", True), ("ALIAS", "word", False)),
        aliases=("alias",),
    ),
    CommandSpec(
        "more",
        "/more [N]",
        "read a folded (long) message whole: the newest, or the N-th newest",
        (("N", "word", False),),
    ),
    CommandSpec(
        "help", "/help [COMMAND]", "this list, or one command", (("COMMAND", "word", False),)
    ),
    CommandSpec("quit", "/quit", "leave the app", aliases=("exit",)),
)

_BY_NAME: dict[str, CommandSpec] = {
    n: spec for spec in COMMANDS for n in (spec.name, *spec.aliases)
}


class CommandError(CurvechatError):
    """A mistake in the command line; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Invocation:
    spec: CommandSpec
    name: str
    """The name as typed (e.g. "switch" for /join)."""
    args: tuple[str, ...]
    rest: str
    """The raw text after the last fixed argument (for TEXT and USER ...)."""
    line: str = ""
    """The whole line as typed."""


def is_command(line: str) -> bool:
    """A line starting with one '/' is a command; '//text' sends '/text'."""
    return line.startswith("/") and not line.startswith("//")


def lookup(name: str) -> CommandSpec | None:
    return _BY_NAME.get(name.lower().lstrip("/"))


def parse(line: str) -> Invocation:
    # Words are apart by any white space (a tab, U+3000 …), as `split` takes them.
    head, *more = line.strip().split(maxsplit=1)
    tail = more[0] if more else ""
    name = head[1:].lower()
    if not name:
        raise CommandError("type a command after '/', or /help for the list")
    spec = _BY_NAME.get(name)
    if spec is None:
        near = nearest(name)
        hint = f" (did you mean /{near}?)" if near else ""
        raise CommandError(f"unknown command /{name}{hint}; /help lists the commands")
    words = tail.split()
    fixed = [a for a in spec.args if a[1] not in ("text", "users")]
    rest_arg = next((a for a in spec.args if a[1] in ("text", "users")), None)
    required = sum(1 for a in fixed if a[2])
    if len(words) < required:
        missing = fixed[len(words)][0]
        raise CommandError(f"/{name}: missing {missing}; usage: {spec.usage}")
    if rest_arg is None and len(words) > len(fixed):
        raise CommandError(f"/{name}: too many arguments; usage: {spec.usage}")
    if rest_arg is not None and rest_arg[2] and len(words) <= len(fixed):
        raise CommandError(f"/{name}: missing {rest_arg[0]}; usage: {spec.usage}")
    args = tuple(words[: len(fixed)])
    rest = ""
    if rest_arg is not None:
        remaining = tail.strip()
        for word in args:
            remaining = remaining[len(word) :].lstrip()
        rest = remaining
    return Invocation(spec, name, args, rest, line)


def nearest(name: str) -> str | None:
    """The known command nearest to the unknown `name`: one it starts,
    else the closest spelling (difflib), else None."""
    name = name.lower()
    started = sorted(n for n in _BY_NAME if len(name) > 1 and n.startswith(name[:2]))
    if started:
        return started[0]
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.6)
    return close[0] if close else None


def help_lines(name: str | None = None) -> list[str]:
    if name:
        spec = lookup(name)
        if spec is None:
            raise CommandError(f"no command /{name.lstrip('/')}; /help lists the commands")
        also = f" (also /{', /'.join(spec.aliases)})" if spec.aliases else ""
        return [f"{spec.usage} — {spec.summary}{also}"]
    return [f"{spec.usage:<34} {spec.summary}" for spec in COMMANDS]


def _common_prefix(words: list[str]) -> str:
    if not words:
        return ""
    first, last = min(words), max(words)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i]


def complete(line: str, rooms: Iterable[str], users: Iterable[str]) -> str:
    """The text to append to `line` to complete its last word (or "")."""
    if not is_command(line) or "\n" in line:
        return ""
    head, space, tail = line.partition(" ")
    if not space:
        names = sorted(n for n in _BY_NAME if n.startswith(head[1:].lower()))
        if len(names) == 1:
            return names[0][len(head) - 1 :] + " "
        return _common_prefix(names)[len(head) - 1 :]
    spec = _BY_NAME.get(head[1:].lower())
    if spec is None:
        return ""
    words = tail.split(" ")
    index = len(words) - 1
    word = words[-1]
    if spec.name == "keys" and words[0] in ("accept", "verify") and index == 1:
        kind: ArgKind = "user"
    elif index < len(spec.args):
        kind = spec.args[index][1]
    elif spec.args and spec.args[-1][1] == "users":
        kind = "users"
    else:
        return ""
    pool = sorted(set(rooms)) if kind == "room" else sorted(set(users))
    if kind not in ("room", "user", "users"):
        return ""
    matches = [p for p in pool if p.startswith(word)]
    if len(matches) == 1:
        return matches[0][len(word) :]
    return _common_prefix(matches)[len(word) :]
