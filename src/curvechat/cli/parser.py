"""The `curvechat` command line: every subcommand, its flags and help
texts (`serve`'s in `serveargs.py`), and the function it runs (`func`).
The options every client command takes (`--home`, `--server`,
`--passphrase-file`, `--timeout`, `--connect-timeout`) are declared once,
as the parent parser `client`.

It must never run anything: it only says what the command line means.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from curvechat import __version__
from curvechat.cli.commands import (
    CONTACT_ACTIONS,
    cmd_chat,
    cmd_contacts,
    cmd_create,
    cmd_dm,
    cmd_history,
    cmd_history_sharing,
    cmd_init,
    cmd_invite,
    cmd_keys,
    cmd_leave,
    cmd_members,
    cmd_promote,
    cmd_remove,
    cmd_rooms,
    cmd_send,
    cmd_tail,
)
from curvechat.cli.common import EXIT_USAGE, finite_float
from curvechat.cli.output import error_line
from curvechat.cli.serve import cmd_monitor
from curvechat.cli.serveargs import add_serve


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line with a code
    (`bad_argument`, exit 2), as every other error of the command is, and
    name the subcommand whose help says more. The top level takes the
    options of the client commands (`client_flags`) before one of those
    commands (`client_commands`) too: `curvechat --home H rooms`."""

    client_flags: frozenset[str] = frozenset()
    client_commands: frozenset[str] = frozenset()

    def error(self, message: str) -> NoReturn:
        self.fail(message, self.prog)

    @staticmethod
    def fail(message: str, prog: str) -> NoReturn:
        line = error_line("bad_argument", f"{message} (see {prog} --help)")
        print(line, file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        if self.client_flags:
            given = list(sys.argv[1:] if args is None else args)
            try:
                args = flags_after_command(given, self.client_flags, self.client_commands)
            except ValueError as exc:
                self.fail(str(exc), self.prog)
        parsed, extra = self.parse_known_args(args, namespace)
        command = getattr(parsed, "command", None)
        prog = f"{self.prog} {command}" if command else self.prog
        if extra:  # the subcommand's own, not the top level's, help lists what it takes
            self.fail(f"unrecognized arguments: {' '.join(extra)}", prog)
        problem = _unusable(parsed)
        if problem is not None:
            self.fail(problem, prog)
        return parsed


def flags_after_command(
    args: list[str], flags: frozenset[str], commands: frozenset[str]
) -> list[str]:
    """`--home H rooms …` as `rooms --home H …`: the client options found
    before a client command move after it, where its parser takes them;
    before another command (`serve`, or `drain`, whose `--timeout` is its
    own) they are refused with ValueError. Anything else before the command
    (`-v`, a `--` just before it) stays where it is."""
    before: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, _ = arg.partition("=")
        if name in flags:
            take = 1 if eq else 2
            moved += args[i : i + take]
            i += take
        elif arg.startswith("-") and not (arg == "--" and moved and i + 1 < len(args)):
            before.append(arg)
            i += 1
        elif moved:
            if arg == "--":  # `--home H -- rooms`
                i += 1
                arg = args[i]
            if arg not in commands:
                flag = moved[0].partition("=")[0]
                raise ValueError(
                    f"{flag} before the command is an option of the client commands"
                    f" ({', '.join(sorted(commands))}), not of {arg!r}"
                )
            return [*before, arg, *moved, *args[i + 1 :]]
        else:
            break
    return args


def _unusable(parsed: argparse.Namespace) -> str | None:
    """What no command can take, whatever the argument: text that is not
    UTF-8 (the terminal's bytes undecodable), a count out of any range.
    (Numbers that are not finite are refused by `finite_float`, the type of
    every float option but those whose own range check says more.)"""
    for name, value in vars(parsed).items():
        shown = f"argument {name}"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{shown} is not valid UTF-8"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
            return f"{shown} is out of range"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="curvechat", description="End-to-end encrypted chat.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (serve, monitor: -v debug; others: -v info, -vv debug)",
    )
    parser.add_argument("--version", action="version", version=f"curvechat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_serve(sub)

    mon = sub.add_parser(
        "monitor", help="run the monitoring web application (its own process and port)"
    )
    mon.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="URL",
        help="a node's HTTP URL, e.g. http://127.0.0.1:7780 (repeatable;"
        " default http://127.0.0.1:7780 unless --store is given)",
    )
    mon.add_argument(
        "--store",
        metavar="URL",
        help="etcd://HOST:PORT[,…][/PREFIX] (etcds:// for TLS): watch the nodes of the"
        " cluster registry there, as they come and go",
    )
    for flag, text in [
        ("--etcd-ca", "CA certificate(s) etcd's are checked with (PEM)"),
        ("--etcd-cert", "TLS client certificate for etcd (PEM)"),
        ("--etcd-key", "the key of --etcd-cert (PEM)"),
        ("--etcd-user", "etcd user to log in as (needs etcds://)"),
        ("--etcd-password-file", "file holding the etcd user's password"),
    ]:
        mon.add_argument(flag, metavar="FILE" if flag != "--etcd-user" else "NAME", help=text)
    mon.add_argument(
        "--node-token-file",
        metavar="PATH",
        help="the nodes' HTTP token (their http.token), sent with every poll;"
        " needed when they are bound off loopback or require it",
    )
    mon.add_argument(
        "--data",
        help="where the monitor keeps its history and token"
        " (default ./monitor-data or $CURVECHAT_MONITOR_DATA)",
    )
    mon.add_argument(
        "--http",
        default="127.0.0.1:7790",
        help="HOST:PORT of the monitor's page (default %(default)s)",
    )
    mon.add_argument(
        "--http-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page answers to, besides its address (repeatable)",
    )
    mon.add_argument(
        "--http-token-file",
        metavar="PATH",
        help="the monitor's own HTTP bearer token, made there if missing (default DATA/http.token)",
    )
    mon.add_argument(
        "--http-require-token",
        action="store_true",
        help="require the monitor's token on loopback too (always required on other addresses)",
    )
    mon.add_argument(
        "--interval",
        type=finite_float,
        default=1.0,
        help="seconds between polls of a node (default 1)",
    )
    mon.add_argument(
        "--history",
        type=finite_float,
        default=3600.0,
        metavar="SECONDS",
        help="how much metric history to keep, in memory and on disk (default 3600)",
    )
    mon.set_defaults(func=cmd_monitor)
    from curvechat.cli.drain import add_parser as add_drain_parser

    add_drain_parser(sub)

    client = Parser(add_help=False)
    client.add_argument(
        "--home", help="client home (identity, cache); default $CURVECHAT_HOME or the XDG data dir"
    )
    client.add_argument(
        "--server", help="connect string (default $CURVECHAT_SERVER, then the last one used)"
    )
    client.add_argument("--passphrase-file", help="read the identity passphrase from this file")
    client.add_argument(
        "--timeout",
        type=finite_float,
        default=15.0,
        help="seconds to wait for a reply or an acknowledgement once connected (default 15)",
    )
    client.add_argument(
        "--connect-timeout",
        type=finite_float,
        metavar="SECONDS",
        help="seconds to wait for a server before working offline"
        " (default $CURVECHAT_CONNECT_TIMEOUT, else 3)",
    )

    parser.client_flags = frozenset(
        flag for action in client._actions for flag in action.option_strings
    )

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        parser.client_commands |= {name}
        p = sub.add_parser(name, parents=[client], help=help)
        p.set_defaults(func=func)
        return p

    add("init", cmd_init, "create an identity (and register it)").add_argument(
        "--user", required=True
    )
    p = add("create", cmd_create, "create a room")
    p.add_argument("room")
    p.add_argument(
        "--members",
        action="append",
        help="users to add, comma-separated (the flag may be given again)",
    )
    for name, func, text in [
        ("invite", cmd_invite, "add a member (admins)"),
        ("remove", cmd_remove, "remove a member (admins)"),
        ("promote", cmd_promote, "make a member an admin (admins)"),
    ]:
        p = add(name, func, text)
        p.add_argument("room")
        p.add_argument("user")
    p = add("leave", cmd_leave, "leave rooms: those named, or every one a user added you to")
    p.add_argument("rooms", nargs="*", metavar="ROOM")
    p.add_argument(
        "--added-by",
        metavar="USER",
        help="the rooms USER made you a member of (a spammer's, say): listed; left with --yes",
    )
    p.add_argument("--yes", action="store_true", help="with --added-by: leave them")
    p = add("dm", cmd_dm, "send a direct message")
    p.add_argument("user")
    p.add_argument("text")
    p = add("send", cmd_send, "send a message ('-' reads lines from stdin)")
    p.add_argument("room")
    p.add_argument("text")
    p = add("history", cmd_history, "show a room's history")
    p.add_argument("room", help="room id, or @user for a direct-message room")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--limit", type=int, default=50, help="the newest this many messages (default 50)"
    )
    add("rooms", cmd_rooms, "list your rooms").add_argument("--json", action="store_true")
    add("members", cmd_members, "list a room's members").add_argument("room")
    p = add("keys", cmd_keys, "fingerprints and safety numbers; accept a changed key")
    p.add_argument("user", nargs="?", help="show this user only")
    p.add_argument(
        "--accept",
        nargs="+",
        metavar=("USER", "FINGERPRINT"),
        help="accept the changed key of USER: the key whose fingerprint (as `keys USER` prints"
        " it, or its first 16 hex digits or more) is FINGERPRINT; without it, show that"
        " fingerprint",
    )
    p.add_argument(
        "--verify",
        metavar="USER",
        help="mark the key of USER as verified, after comparing safety numbers",
    )
    p = add(
        "history-sharing",
        cmd_history_sharing,
        "show or set whether members you add get the room's earlier messages",
    )
    p.add_argument("room")
    p.add_argument("mode", nargs="?", choices=["all", "verified"])
    p = add(
        "contacts",
        cmd_contacts,
        "show or change your contacts, and whether only they may put you in a room",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=CONTACT_ACTIONS,
        help="add or remove USERs; only: take rooms only from contacts; anyone: from anyone",
    )
    p.add_argument("users", nargs="*", metavar="USER")
    add("chat", cmd_chat, "the terminal chat client")
    p = add("tail", cmd_tail, "follow a room until interrupted")
    p.add_argument("room")
    p.add_argument("--json", action="store_true")
    p.add_argument("--last", type=int, default=0, help="show the last N messages first")
    p.add_argument(
        "--peers",
        action="store_true",
        help="listen for members and keep the room going peer to peer while the server is down",
    )
    from curvechat.cli.unlock import add_parsers as add_agent_parsers

    add_agent_parsers(add)
    return parser
