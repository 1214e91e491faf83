"""Slash commands: their table, parsing and completion. No I/O, no Textual.

The chat screen runs a parsed `Invocation`; everything a user can get wrong
in the line itself (unknown command, missing or extra arguments) is a
`CommandError` with a one-line explanation, raised here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

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
        "switch to a room you are a member of (#room, @user)",
        (("ROOM", "room", True),),
        aliases=("switch",),
    ),
    CommandSpec("invite", "/invite USER", "add a member to this room", (("USER", "user", True),)),
    CommandSpec(
        "remove",
        "/remove USER",
        "remove a member (the room key rotates)",
        (("USER", "user", True),),
    ),
    CommandSpec("leave", "/leave", "leave this room"),
    CommandSpec(
        "dm",
        "/dm USER [TEXT]",
        "open the direct-message room with USER (and send TEXT)",
        (("USER", "user", True), ("TEXT", "text", False)),
    ),
    CommandSpec("rooms", "/rooms", "list your rooms"),
    CommandSpec("members", "/members", "list this room's members"),
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
        "nick",
        "/nick USER [ALIAS]",
        "show USER as ALIAS on this machine (no ALIAS: clear it)",
        (("USER", "user", True), ("ALIAS", "word", False)),
    ),
    CommandSpec(
        "help", "/help [COMMAND]", "this list, or one command", (("COMMAND", "word", False),)
    ),
    CommandSpec("quit", "/quit", "leave the app"),
)

_BY_NAME: dict[str, CommandSpec] = {
    n: spec for spec in COMMANDS for n in (spec.name, *spec.aliases)
}


class CommandError(Exception):
    """A mistake in the command line; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Invocation:
    spec: CommandSpec
    name: str
    """The name as typed (e.g. "switch" for /join)."""
    args: tuple[str, ...]
    rest: str
    """The raw text after the last fixed argument (for TEXT and USER ...)."""


def is_command(line: str) -> bool:
    """A line starting with one '/' is a command; '//text' sends '/text'."""
    return line.startswith("/") and not line.startswith("//")


def lookup(name: str) -> CommandSpec | None:
    return _BY_NAME.get(name.lower().lstrip("/"))


def parse(line: str) -> Invocation:
    head, _, tail = line.strip().partition(" ")
    name = head[1:].lower()
    if not name:
        raise CommandError("type a command after '/', or /help for the list")
    spec = _BY_NAME.get(name)
    if spec is None:
        near = sorted(n for n in _BY_NAME if n.startswith(name[:2]))
        hint = f" (did you mean /{near[0]}?)" if near else ""
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
    args = tuple(words[: len(fixed)])
    rest = ""
    if rest_arg is not None:
        remaining = tail.strip()
        for word in args:
            remaining = remaining[len(word) :].lstrip(" ")
        rest = remaining
    return Invocation(spec, name, args, rest)


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
