"""What every command shares: `CliError` and the exit codes, the identity
and its passphrase, the server to reach, running a body on a connected
client, and printing a message or an error as one line.

It must never print what a command answers (each command does) nor parse
the command line (`cli/parser.py`); it only opens, connects and formats.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import math
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from curvechat.cli.output import error_line, json_line, message_line
from curvechat.protocol.errors import ConfigError, CurvechatError
from curvechat.protocol.text import clip, visible
from curvechat.smallfiles import read_small_text

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient

EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_QUEUED = 75


class CliError(CurvechatError):
    """A command failed; `code` and `exit_code` say how (README, Exit codes)."""

    def __init__(self, code: str, message: str, exit_code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


OUT_OF_RANGE = "(time out of range)"
"""Shown for a time no calendar date holds: the wire allows any up to 2**53
ms (year 287,396), a server's as well as a sender's; a date stops at 9999."""


def _when(ms: int, tz: dt.tzinfo | None = None) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, tz)
    except (OverflowError, OSError, ValueError):
        return None


def _iso(ms: int | None) -> str | None:
    """`ms` in ISO 8601, UTC; None if unknown or out of range."""
    when = None if ms is None else _when(ms, dt.UTC)
    if when is None:
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local(ms: int) -> str:
    when = _when(ms)
    return OUT_OF_RANGE if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


# --- passphrase and identity ---------------------------------------------------------
def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    if args.passphrase_file is not None:
        if not args.passphrase_file:
            raise CliError("passphrase_file", "--passphrase-file names no file", EXIT_USAGE)
        try:
            text = read_small_text(Path(args.passphrase_file)).rstrip("\n")
        except (OSError, UnicodeDecodeError) as exc:
            # an OSError's str() names the file again, in full: its reason only
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CliError(
                "passphrase_file", f"cannot read {visible(clip(args.passphrase_file))}: {why}"
            ) from exc
    elif "CURVECHAT_PASSPHRASE" in os.environ:
        text = os.environ["CURVECHAT_PASSPHRASE"]
    elif stdin_is_a_terminal():
        text = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("again: ") != text:
            raise CliError("passphrase_mismatch", "the passphrases differ")
    else:
        raise CliError(
            "no_passphrase",
            "no passphrase, and no terminal to ask on (input is not one): set"
            " CURVECHAT_PASSPHRASE, use --passphrase-file, or 'curvechat unlock' first",
        )
    if not text:
        raise CliError("no_passphrase", "the passphrase is empty")
    try:
        return text.encode()
    except UnicodeEncodeError:  # bytes the locale could not decode, as surrogates
        raise CliError("bad_passphrase", "the passphrase is not valid UTF-8") from None


def stdin_is_a_terminal() -> bool:
    """False also when there is no stdin at all (closed: `<&-`)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _home(args: argparse.Namespace) -> Any:
    """The client home, checked (`Home.check`): a path the system refuses
    (too long, not ours to search) is one `data_dir` line naming it, before
    any command uses it."""
    from curvechat.client.home import Home, default_home

    home = Home(Path(args.home) if args.home else default_home())
    home.check()
    return home


def _server_string(args: argparse.Namespace, home: Any) -> str:
    text = args.server or os.environ.get("CURVECHAT_SERVER") or home.saved_server()
    if not text:
        raise CliError(
            "no_server", "no server: pass --server CONNECT (printed by `curvechat serve`)"
        )
    return str(text)


def _addresses(text: str) -> Any:
    from curvechat.protocol.connect import ConnectStringError, parse_connect

    try:
        return parse_connect(text)
    except ConnectStringError as exc:
        raise CliError("bad_connect_string", str(exc), EXIT_USAGE) from exc


def kept_servers(given: str, addresses: Any) -> str:
    """What the home keeps for the next command: the nodes given, then the
    others of their cluster that a welcome named, as many as a connect
    string holds (the next command tries those too, and `_tell_another_server`
    knows them as the same server)."""
    from curvechat.protocol.connect import MAX_CONNECT_LEN, format_connect

    kept: list[Any] = []
    for address in addresses:
        if len(format_connect([*kept, address])) > MAX_CONNECT_LEN:
            break
        kept.append(address)
    return format_connect(kept) if kept else given


def _tell_another_server(home: Any, addresses: Any, user: str) -> None:
    """Say so on stderr when none of the nodes given has a key of the
    server this home used last (or of the other nodes of its cluster, as
    kept then): the user may have meant that server, and a server that did
    not know the user registered them, unasked. (Only what the home kept
    counts, never what the new server names: it could name anyone's key.)"""
    from curvechat.protocol.connect import ConnectStringError, parse_connect

    try:
        saved = home.saved_server()
        before = parse_connect(saved) if saved else []
    except (ConfigError, ConnectStringError):
        return
    if not before or {a.server_key for a in addresses} & {a.server_key for a in before}:
        return
    print(
        f"curvechat: {visible(addresses[0].endpoint)} (fingerprint {addresses[0].fingerprint})"
        f" is not the server this home used last ({visible(before[0].endpoint)}): its rooms"
        f" are not there, and {user} was registered there if that server did not know them",
        file=sys.stderr,
    )


def no_identity(args: argparse.Namespace, home: Any) -> CliError:
    """The error for a home with no identity, naming the command that makes
    one there (with `--home` when the home was given by it)."""
    where = f" --home {shlex.quote(args.home)}" if args.home else ""
    return CliError(
        "no_identity", f"no identity in {home.path}: run `curvechat init --user NAME{where}`"
    )


def _load_identity(args: argparse.Namespace, home: Any, *, agent: bool = True) -> Any:
    """The identity: from the unlock agent if one holds it (cli/unlock.py),
    else opened with the passphrase (Argon2id)."""
    from curvechat.crypto.errors import KeyFileError, WrongPassphrase
    from curvechat.crypto.keyfile import load_identity

    if not home.identity.exists():
        raise no_identity(args, home)
    if agent:
        from curvechat.cli.unlock import identity_from_agent

        unlocked = identity_from_agent(home)
        if unlocked is not None:
            return unlocked
    try:
        return load_identity(home.identity, _passphrase(args))
    except WrongPassphrase as exc:
        raise CliError("wrong_passphrase", "wrong passphrase") from exc
    except KeyFileError as exc:
        raise CliError("bad_identity", str(exc)) from exc


# --- running a client ---------------------------------------------------------------
async def _with_client(
    args: argparse.Namespace,
    body: Callable[[ChatClient], Awaitable[int]],
    *,
    identity: Any = None,
    offline: Callable[[ChatClient, Any], Awaitable[int]] | None = None,
) -> int:
    """Run `body` on a connected, synced client; with no server reachable,
    `offline` on the client and the `reach.Offline` that says why (or exit 3)."""
    from curvechat.cli.follow import peer_options
    from curvechat.cli.reach import Offline, connect_timeout, deliver_queued, reach
    from curvechat.client.enroll import node_timeout
    from curvechat.client.errors import ServerRefused
    from curvechat.client.open import open_client
    from curvechat.client.recall import last_sync_ms

    try:
        wait = connect_timeout(args)
    except ValueError as exc:
        raise CliError("bad_argument", str(exc), EXIT_USAGE) from exc
    home = _home(args)
    identity = identity or _load_identity(args, home)
    server = _server_string(args, home)
    addresses = _addresses(server)
    per_node = node_timeout(wait, len(addresses))
    client = open_client(
        home,
        identity,
        addresses,
        client_id="curvechat-cli",
        connect_timeout=per_node,
        **peer_options(args),
    )
    try:
        await client.start()
        away = await reach(client, wait)
        if away is not None:
            if offline is None:
                raise CliError("unreachable", away.why, EXIT_UNREACHABLE)
            return await offline(client, away)
        try:
            ready = await client.wait_ready(args.timeout)
        except ServerRefused as exc:
            raise CliError(exc.code, exc.message) from exc
        if not ready:
            # A node answered but could not serve (its store lost its quorum,
            # it keeps refusing the sync): as good as none, for what waits.
            why = (
                f"no server got ready within {args.timeout:g} s "
                f"({client.status.detail or client.status.state})"
            )
            if offline is not None:
                return await offline(client, Offline(why, last_sync_ms(client.cache)))
            raise CliError("unreachable", why, EXIT_UNREACHABLE)
        _tell_another_server(home, addresses, identity.user)
        home.save_server(kept_servers(server, client.conn.addresses))
        queued = await deliver_queued(client, args.timeout)
        try:
            return await body(client)
        finally:
            await queued.finish()
    finally:
        await client.close()


def _run(args: argparse.Namespace, body: Callable[[ChatClient], Awaitable[int]]) -> int:
    return asyncio.run(_with_client(args, body))


# --- messages and rooms -------------------------------------------------------------
def _message_record(msg: Any) -> dict[str, Any]:
    return {
        "room": msg.room,
        "seq": msg.seq,
        "sender": msg.sender,
        "ts": _iso(msg.ts_ms),
        "sent": _iso(msg.sent_ms),
        "text": msg.text,
        "error": msg.error,
        "txn": msg.txn,
    }


def _message_json(msg: Any) -> str:
    return json_line(_message_record(msg))


def _message_line(msg: Any) -> str:
    return message_line(_local(msg.ts_ms), msg.seq, msg.sender, msg.text, msg.error)


def finite_float(text: str) -> float:
    """An argparse type: a float that is a number (not nan, not inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {visible(text[:40])}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{visible(text[:40])} is not a finite number")
    return value


def room_problem(room: str, *, create: bool = False) -> str | None:
    """Why `room`, as typed, names no room (None: it may): a room id, or
    @user for the direct-message room with that user; a room to create is
    a group room (direct-message rooms are made by `dm`)."""
    from curvechat.protocol.limits import ROOM_RE, is_room_id, is_user_name

    if create and room.startswith("@") and is_room_id(room):
        return (
            f"{visible(room)} is a direct-message room: send to it with"
            " `curvechat dm USER TEXT`, which makes it with both of you in it"
        )
    if ROOM_RE.fullmatch(room) or (not create and is_room_id(room)):
        return None
    if not create and room.startswith("@") and is_user_name(room[1:]):
        return None
    return (
        f"not a room id: {visible(clip(room))} (1-64 of a-z 0-9 _ . -, starting with a"
        " letter or digit" + (")" if create else "; or @user)")
    )


def no_such_room(room: str) -> CliError:
    """The one error of every command given a room this home has never been
    in (a misspelled name, most often)."""
    return CliError(
        "no_such_room",
        f"no room {visible(room)} here: you are not a member of it; `curvechat rooms` lists yours",
    )


def _resolve_room(client: ChatClient, room: str) -> str:
    """The room id `room` names: @user is the direct-message room with that
    user (`bad_room` for your own name: there is no room with yourself).
    A room this home has never been in is `no_such_room`, said the same for
    every command, before any asks the engine or the server (whose words
    differ). A room it left is in the cache still: each command says what
    that means for it."""
    from curvechat.protocol.limits import dm_room, is_user_name

    if room.startswith("@") and is_user_name(room[1:]):
        if room[1:] == client.me:
            raise CliError("bad_room", f"{room} is you: a direct-message room is with another user")
        room = str(dm_room(client.me, room[1:]))
    if client.cache.room(room) is None:
        raise no_such_room(room)
    return room


# --- failing ------------------------------------------------------------------------
def _fail(code: str, message: str, exit_code: int) -> NoReturn:
    print(error_line(code, message), file=sys.stderr)
    raise SystemExit(exit_code)
