"""The client commands: each opens the identity, connects, syncs, does one
thing on a room, a member or a key, prints what it did and exits
(`common._run`). `send`, `dm`, `history` and `rooms` are in
`cli/offline.py` (they still answer with no server), `tail` in
`cli/follow.py`, `init` in `cli/enroll.py`; `chat` starts the terminal
client, which asks on screen for what is missing.

It must never print a failure itself: a failure is raised as a `CliError`,
which `main` prints as one line with its exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from curvechat.cli.common import (
    EXIT_USAGE,
    CliError,
    _addresses,
    _home,
    _passphrase,
    _resolve_room,
    _run,
    stdin_is_a_terminal,
)
from curvechat.cli.output import error_line, log_handler
from curvechat.protocol.text import visible

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient


def cmd_init(args: argparse.Namespace) -> int:
    from curvechat.cli.enroll import cmd_init as init  # the name is checked before it is kept

    return init(args)


def cmd_create(args: argparse.Namespace) -> int:
    named = [u.strip() for text in args.members or [] for u in text.split(",")]
    members = list(dict.fromkeys(u for u in named if u))  # each once, in order

    async def body(client: ChatClient) -> int:
        await client.create_room(args.room, members)
        others = [u for u in members if u != client.me]
        print(f"created {args.room} with {', '.join([client.me, *others])}")
        return 0

    return _run(args, body)


def cmd_invite(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        room = _resolve_room(client, args.room)
        result = await client.invite(room, args.user)
        print(f"added {args.user} to {room}")
        if not result.verified:
            print(
                f"note: the key of {args.user} is unverified (first seen through the server)."
                f" Compare this safety number with {args.user} in person or by phone:\n"
                f"  {result.safety_number}\n"
                f"then: curvechat keys --verify {args.user}"
            )
        if not result.shared_history:
            print(
                f"{args.user} gets no earlier messages: {room} shares history with"
                " verified members only; the room key was rotated"
            )
        return 0

    return _run(args, body)


def cmd_remove(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        room = _resolve_room(client, args.room)
        await client.remove(room, args.user)
        print(f"removed {args.user} from {room}; the room key was rotated")
        return 0

    return _run(args, body)


def cmd_promote(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        room = _resolve_room(client, args.room)
        await client.promote(room, args.user)
        print(f"{args.user} is now an admin of {room}")
        return 0

    return _run(args, body)


def cmd_leave(args: argparse.Namespace) -> int:
    named: list[str] = list(dict.fromkeys(args.rooms))
    by: str | None = args.added_by
    if bool(named) == (by is not None):
        raise CliError("bad_argument", "leave takes ROOM ... or --added-by USER", EXIT_USAGE)
    if args.yes and by is None:
        raise CliError("bad_argument", "--yes goes with --added-by", EXIT_USAGE)

    async def body(client: ChatClient) -> int:
        from curvechat.client.errors import NotConnected
        from curvechat.protocol.errors import CurvechatError

        if by is None:
            rooms = [_resolve_room(client, room) for room in named]  # every name checked first
        else:
            rooms = _added_by(client, by)
            if not args.yes:
                for room in rooms:
                    print(f"would leave {room}")
                print(
                    f"{len(rooms)} room(s) {by} added you to; to leave them:"
                    f" curvechat leave --added-by {by} --yes",
                    file=sys.stderr,
                )
                return 0
        failed = 0
        for done, room in enumerate(rooms):
            try:
                await client.leave(room)
            except NotConnected as exc:  # the rest would fail alike
                if len(rooms) == 1:
                    raise
                raise CliError(
                    exc.code, f"{room}: {exc}; {len(rooms) - done} room(s) not left"
                ) from exc
            except CurvechatError as exc:  # a refusal, a timeout, a log that does not verify
                if len(rooms) == 1:
                    raise
                print(error_line(str(exc.code), f"{room}: {exc}"), file=sys.stderr)
                failed += 1
                continue
            print(f"left {room}")
        return 1 if failed else 0

    return _run(args, body)


def _added_by(client: ChatClient, by: str) -> list[str]:
    """The rooms `by` made the user a member of, by the verified logs."""
    from curvechat.protocol.limits import is_user_name

    if not is_user_name(by):
        raise CliError("bad_name", f"{visible(by[:64])!r} is not a valid user name")
    if by == client.me:
        raise CliError(
            "bad_argument", "those are the rooms you created: leave them by name", EXIT_USAGE
        )
    return [r.room for r in client.rooms() if r.added_by == by]


def cmd_send(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_send as send  # queues when offline

    return send(args)


def cmd_dm(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_dm as dm

    return dm(args)


def cmd_history(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_history as history  # the cache, when offline

    return history(args)


def cmd_rooms(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_rooms as rooms

    return rooms(args)


def cmd_members(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        from curvechat.cli.follow import require_member

        room = _resolve_room(client, args.room)
        require_member(client, room)
        for member in client.member_details(room):
            marks = [
                *(["admin"] if member.admin else []),
                *([] if member.verified else ["unverified"]),
                *(["KEY CHANGED"] if member.key_changed else []),
            ]
            shown = f" ({', '.join(marks)})" if marks else ""
            print(f"{member.user}{shown}")
        return 0

    return _run(args, body)


def cmd_tail(args: argparse.Namespace) -> int:
    from curvechat.cli.follow import cmd_tail as tail

    return tail(args)


FINGERPRINT_DIGITS = 32
"""Hex digits in a fingerprint (`crypto.identity.fingerprint`)."""
FINGERPRINT_MIN_DIGITS = 16
"""The shortest start of a fingerprint `keys --accept` takes (64 bits)."""


def _typed_fingerprint(parts: list[str]) -> str:
    """The hex digits of a fingerprint typed as one or more words (spaces
    ignored); a usage error if that is not the start of a fingerprint."""
    typed = "".join("".join(parts).split()).lower()
    if not (
        FINGERPRINT_MIN_DIGITS <= len(typed) <= FINGERPRINT_DIGITS
        and all(c in "0123456789abcdef" for c in typed)
    ):
        raise CliError(
            "bad_argument",
            f"--accept USER FINGERPRINT: give the fingerprint `curvechat keys` prints for the"
            f" offered key, at least its first {FINGERPRINT_MIN_DIGITS} hex digits;"
            f" got {visible(' '.join(parts))!r}",
            EXIT_USAGE,
        )
    return typed


def _grouped(digits: str) -> str:
    """Hex digits in groups of 4, as fingerprints are printed."""
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _accept_command(user: str, fingerprint: str) -> str:
    return f"curvechat keys --accept {user} {fingerprint}"


async def _accept_key(client: ChatClient, user: str, typed: str) -> int:
    """`keys --accept USER [FINGERPRINT]`: accept the key USER offers only
    if FINGERPRINT names it; without one, show it and say how to accept it."""
    info = await client.key_info(user)
    offered, shown = info.offered, info.offered_fingerprint
    if offered is None or shown is None:
        raise CliError("no_key_change", f"no key change is pending for {user}")
    if not typed:
        print(f"{user} offers a new key: {shown}")
        print(f"  new safety number: {info.offered_safety_number}")
        raise CliError(
            "no_fingerprint",
            f"compare the new safety number above with {user} in person, then accept that key"
            f" by its fingerprint: {_accept_command(user, shown)}",
            EXIT_USAGE,
        )
    if not shown.replace(" ", "").startswith(typed):
        print(f"{user} offers a new key: {shown}")
        print(f"  new safety number: {info.offered_safety_number}")
        raise CliError(
            "fingerprint_mismatch",
            f"the key {user} offers is not the one you named ({_grouped(typed)}), so nothing was"
            f" accepted: it may have changed since you compared it; compare the new safety"
            f" number with {user}, then: {_accept_command(user, shown)}",
        )
    await client.accept_key(user, offered)
    print(f"accepted the new key of {user}: {shown}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    accept: list[str] = args.accept or []
    typed = _typed_fingerprint(accept[1:]) if len(accept) > 1 else ""

    async def body(client: ChatClient) -> int:
        if accept:
            return await _accept_key(client, accept[0], typed)
        if args.verify:
            info = client.verify_key(args.verify)
            print(f"marked the key of {args.verify} as verified: {info.fingerprint}")
            return 0
        users = [args.user] if args.user else sorted(set(client.cache.pins()) - {client.me})
        infos = [await client.key_info(user) for user in users]
        me = await client.key_info(client.me)
        print(f"you ({client.me}): {me.fingerprint}")
        for info in infos:
            user = info.user
            state = "verified" if info.verified else "unverified"
            print(f"{user}: {info.fingerprint} ({state})")
            print(f"  safety number with {user}: {info.safety_number}")
            if info.changed:
                print(f"  !! the key of {user} CHANGED to {info.offered_fingerprint}")
                print(f"  !! new safety number: {info.offered_safety_number}")
                print(
                    f"  !! compare it with {user} in person, then: "
                    + _accept_command(user, info.offered_fingerprint or "")
                )
        return 1 if any(u in client.key_changes() for u in users) else 0

    return _run(args, body)


def cmd_history_sharing(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        from curvechat.cli.follow import require_member

        room = _resolve_room(client, args.room)
        require_member(client, room)
        if args.mode:
            client.set_history_sharing(room, args.mode)
        mode = client.history_sharing(room)
        print(
            f"{room}: members you add get "
            + ("the whole history" if mode == "all" else "earlier messages only if verified")
        )
        return 0

    return _run(args, body)


CONTACT_ACTIONS = ("add", "remove", "only", "anyone")
"""`client.engine.CONTACT_ACTIONS`, again: building the parser must not import the engine."""


def cmd_contacts(args: argparse.Namespace) -> int:
    action, users = args.action, args.users
    if action in ("add", "remove") and not users:
        raise CliError("bad_argument", f"contacts {action} needs at least one USER", EXIT_USAGE)
    if action in (None, "only", "anyone") and users:
        what = f"contacts {action}" if action else "contacts without an action"
        raise CliError("bad_argument", f"{what} takes no USER", EXIT_USAGE)

    async def body(client: ChatClient) -> int:
        got = await client.contacts(action, users)
        print(
            "only your contacts may put you in a room"
            if got.only
            else "anyone may put you in a room"
        )
        print(f"contacts ({len(got.users)}){':' if got.users else ''}")
        for user in got.users:
            print(f"  {user}")
        return 0

    return _run(args, body)


def cmd_chat(args: argparse.Namespace) -> int:
    """The terminal client. It asks for what is missing (identity, passphrase,
    server) on screen instead of on stdin, so nothing here prompts."""
    from curvechat.tui.app import make_app
    from curvechat.tui.settings import ChatSettings

    if not (stdin_is_a_terminal() and sys.stdout is not None and sys.stdout.isatty()):
        # Without one it would wait forever for keys, rendering into a pipe.
        raise CliError(
            "not_a_terminal",
            "the terminal client needs a terminal on stdin and stdout;"
            " in a script, use send, history or tail",
            EXIT_USAGE,
        )
    home = _home(args)
    passphrase: bytes | None = None
    if args.passphrase_file or "CURVECHAT_PASSPHRASE" in os.environ:
        passphrase = _passphrase(args)
    server = args.server or os.environ.get("CURVECHAT_SERVER") or None
    if server is not None:
        _addresses(server)
    # Log lines on stderr would tear the screen: they go to a file in the home.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    home.ensure()
    root.addHandler(log_handler(logging.FileHandler(home.path / "chat.log")))
    settings = ChatSettings(
        home=home.path,
        server=server,
        passphrase=passphrase,
        keymap=ChatSettings.keymap_from_env(),
    )
    app = make_app(settings)
    result = app.run()
    return int(result or app.return_code or 0)  # (a bug: no result, return code 1)
