"""`curvechat` command line.

Every client command opens the identity (passphrase from
`CURVECHAT_PASSPHRASE`, `--passphrase-file` or the terminal), connects, syncs,
does one thing and exits. Errors are one line with a code, never a traceback.

Exit codes: 0 done; 1 refused or failed (the message says why); 2 usage;
3 no server reachable; 75 a message is queued but not yet acknowledged.
With no server reachable `send` queues and `history` and `rooms` answer from
the local cache (`cli/offline.py`); how long a command waits to know that is
`cli/reach.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from curvechat.cli.output import error_line, json_line, log_handler, message_line
from curvechat.protocol.errors import CurvechatError

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


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _local(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


# --- passphrase and identity ---------------------------------------------------------
def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    if args.passphrase_file:
        try:
            text = Path(args.passphrase_file).read_text().rstrip("\n")
        except OSError as exc:
            raise CliError("passphrase_file", f"cannot read {args.passphrase_file}: {exc}") from exc
    elif "CURVECHAT_PASSPHRASE" in os.environ:
        text = os.environ["CURVECHAT_PASSPHRASE"]
    elif sys.stdin.isatty():
        text = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("again: ") != text:
            raise CliError("passphrase_mismatch", "the passphrases differ")
    else:
        raise CliError(
            "no_passphrase", "no passphrase: set CURVECHAT_PASSPHRASE or use --passphrase-file"
        )
    if not text:
        raise CliError("no_passphrase", "the passphrase is empty")
    return text.encode()


def _home(args: argparse.Namespace) -> Any:
    from curvechat.client.home import Home, default_home

    return Home(Path(args.home) if args.home else default_home())


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


def _load_identity(args: argparse.Namespace, home: Any, *, agent: bool = True) -> Any:
    """The identity: from the unlock agent if one holds it (cli/unlock.py),
    else opened with the passphrase (Argon2id)."""
    from curvechat.crypto.errors import KeyFileError, WrongPassphrase
    from curvechat.crypto.keyfile import load_identity

    if not home.identity.exists():
        raise CliError(
            "no_identity", f"no identity in {home.path}: run `curvechat init --user NAME`"
        )
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
    from curvechat.cli.reach import connect_timeout, deliver_queued, node_timeout, reach
    from curvechat.client.errors import ServerRefused
    from curvechat.client.open import open_client

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
            raise CliError(
                "unreachable",
                f"no server answered within {args.timeout:g} s "
                f"({client.status.detail or client.status.state})",
                EXIT_UNREACHABLE,
            )
        home.save_server(server)
        await deliver_queued(client, args.timeout)
        return await body(client)
    finally:
        await client.close()


def _run(args: argparse.Namespace, body: Callable[[ChatClient], Awaitable[int]]) -> int:
    return asyncio.run(_with_client(args, body))


# --- commands ---------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from curvechat.server.app import serve
    from curvechat.server.keys import ServerKeyError
    from curvechat.server.ratelimit import RateLimits
    from curvechat.store import NodeNameTaken, StoreRefused, StoreUnavailable

    if args.rate_conn <= 0 or args.rate_user <= 0:
        raise CliError("bad_argument", "rates must be positive", EXIT_USAGE)
    limits = RateLimits(per_connection=args.rate_conn, per_user=args.rate_user)

    if args.influx_interval <= 0:
        raise CliError("bad_argument", "--influx-interval must be positive", EXIT_USAGE)
    if args.node_name is not None:
        from curvechat.server.node import NODE_NAME_RULE, valid_node_name

        if not valid_node_name(args.node_name):
            raise CliError("bad_argument", f"--node-name: {NODE_NAME_RULE}", EXIT_USAGE)
    if args.influx:
        from curvechat.server.influx import write_url

        try:
            write_url(args.influx, args.influx_db)
        except ValueError as exc:
            raise CliError("bad_argument", f"--influx: {exc}", EXIT_USAGE) from exc

    if not 8 <= args.etcd_max_txn_ops <= 100_000:
        raise CliError("bad_argument", "--etcd-max-txn-ops must be 8 … 100000", EXIT_USAGE)
    etcd_security = None
    if args.store:
        from curvechat.store.etcd import EtcdSecurity, parse_etcd_url

        try:
            parse_etcd_url(args.store)
        except ValueError as exc:
            raise CliError("bad_argument", f"--store: {exc}", EXIT_USAGE) from exc
        try:
            etcd_security = EtcdSecurity.load(
                args.store,
                ca_file=args.etcd_ca,
                cert_file=args.etcd_cert,
                key_file=args.etcd_key,
                user=args.etcd_user,
                password_file=args.etcd_password_file,
            )
        except ValueError as exc:
            raise CliError("bad_argument", str(exc), EXIT_USAGE) from exc
    elif (
        args.etcd_ca or args.etcd_cert or args.etcd_key or args.etcd_user or args.etcd_password_file
    ):
        raise CliError("bad_argument", "the --etcd-* options need --store", EXIT_USAGE)
    if args.etcd_quota_bytes is not None:
        from curvechat.server.capacity import MAX_QUOTA_BYTES, MIN_QUOTA_BYTES

        if not args.store:
            raise CliError("bad_argument", "--etcd-quota-bytes needs --store", EXIT_USAGE)
        if not MIN_QUOTA_BYTES <= args.etcd_quota_bytes <= MAX_QUOTA_BYTES:
            raise CliError(
                "bad_argument",
                f"--etcd-quota-bytes must be {MIN_QUOTA_BYTES} … {MAX_QUOTA_BYTES}"
                " (etcd's --quota-backend-bytes)",
                EXIT_USAGE,
            )
    if args.link_bind is not None:
        if not args.store:
            raise CliError("bad_argument", "--link-bind needs --store", EXIT_USAGE)
        if not re.fullmatch(r"tcp://[^\s/]+:(\d{1,5}|\*)", args.link_bind):
            raise CliError(
                "bad_argument",
                "--link-bind must look like tcp://HOST:PORT or tcp://HOST:*",
                EXIT_USAGE,
            )

    data = Path(args.data) if args.data else Path(os.environ.get("CURVECHAT_DATA", "data"))
    try:
        asyncio.run(
            serve(
                data,
                args.bind,
                args.http or None,
                args.advertise,
                limits=limits,
                influx=args.influx,
                influx_db=args.influx_db,
                influx_interval=args.influx_interval,
                store_url=args.store,
                etcd_max_txn_ops=args.etcd_max_txn_ops,
                etcd_security=etcd_security,
                etcd_quota_bytes=args.etcd_quota_bytes,
                http_hosts=args.http_host,
                http_token_file=Path(args.http_token_file) if args.http_token_file else None,
                http_require_token=args.http_require_token,
                metrics_open=args.metrics_open,
                node_name=args.node_name,
                link_bind=args.link_bind,
            )
        )
    except ServerKeyError as exc:
        raise CliError("server_key", str(exc)) from exc
    except StoreRefused as exc:
        raise CliError(exc.code, f"cannot use etcd: {exc}") from exc
    except NodeNameTaken as exc:
        raise CliError(exc.code, str(exc)) from exc
    except StoreUnavailable as exc:
        raise CliError("store_unavailable", f"the store is unavailable: {exc}") from exc
    except RuntimeError as exc:
        raise CliError("refused_to_start", str(exc)) from exc
    except OSError as exc:
        raise CliError("bind_failed", str(exc)) from exc
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from curvechat.cli.enroll import cmd_init as init  # the name is checked before it is kept

    return init(args)


def cmd_create(args: argparse.Namespace) -> int:
    members = [u.strip() for u in (args.members or "").split(",") if u.strip()]

    async def body(client: ChatClient) -> int:
        await client.create_room(args.room, members)
        print(f"created {args.room} with {', '.join([client.me, *members])}")
        return 0

    return _run(args, body)


def cmd_invite(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        result = await client.invite(args.room, args.user)
        print(f"added {args.user} to {args.room}")
        if not result.verified:
            print(
                f"note: the key of {args.user} is unverified (first seen through the server)."
                f" Compare this safety number with {args.user} in person or by phone:\n"
                f"  {result.safety_number}\n"
                f"then: curvechat keys --verify {args.user}"
            )
        if not result.shared_history:
            print(
                f"{args.user} gets no earlier messages: {args.room} shares history with"
                " verified members only; the room key was rotated"
            )
        return 0

    return _run(args, body)


def cmd_remove(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        await client.remove(args.room, args.user)
        print(f"removed {args.user} from {args.room}; the room key was rotated")
        return 0

    return _run(args, body)


def cmd_promote(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        await client.promote(args.room, args.user)
        print(f"{args.user} is now an admin of {args.room}")
        return 0

    return _run(args, body)


def cmd_leave(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        await client.leave(args.room)
        print(f"left {args.room}")
        return 0

    return _run(args, body)


def cmd_send(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_send as send  # queues when offline

    return send(args)


def cmd_dm(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_dm as dm

    return dm(args)


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


def cmd_history(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_history as history  # the cache, when offline

    return history(args)


def cmd_rooms(args: argparse.Namespace) -> int:
    from curvechat.cli.offline import cmd_rooms as rooms

    return rooms(args)


def cmd_members(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        room = _resolve_room(client, args.room)
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


def _resolve_room(client: ChatClient, room: str) -> str:
    from curvechat.protocol.limits import dm_room, is_user_name

    if room.startswith("@") and is_user_name(room[1:]):
        return str(dm_room(client.me, room[1:]))
    return room


def cmd_tail(args: argparse.Namespace) -> int:
    from curvechat.cli.follow import cmd_tail as tail

    return tail(args)


def cmd_keys(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        if args.accept:
            info = await client.key_info(args.accept)
            if not info.changed:
                raise CliError("no_key_change", f"no key change is pending for {args.accept}")
            await client.accept_key(args.accept)
            print(f"accepted the new key of {args.accept}: {info.offered_fingerprint}")
            return 0
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
                    f"  !! compare it with {user} in person, then: curvechat keys --accept {user}"
                )
        return 1 if any(u in client.key_changes() for u in users) else 0

    return _run(args, body)


def cmd_history_sharing(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        room = _resolve_room(client, args.room)
        if args.mode:
            client.set_history_sharing(room, args.mode)
        mode = client.history_sharing(room)
        print(
            f"{room}: members you add get "
            + ("the whole history" if mode == "all" else "earlier messages only if verified")
        )
        return 0

    return _run(args, body)


def cmd_chat(args: argparse.Namespace) -> int:
    """The terminal client. It asks for what is missing (identity, passphrase,
    server) on screen instead of on stdin, so nothing here prompts."""
    from curvechat.tui.app import make_app
    from curvechat.tui.settings import ChatSettings

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
    result = make_app(settings).run()
    return int(result or 0)


def cmd_monitor(args: argparse.Namespace) -> int:
    """The monitoring web application: its own process and port, watching
    the nodes from outside (docs/monitoring.md, "The monitor")."""
    from curvechat.monitor.app import MonitorError, run_monitor
    from curvechat.monitor.sources import EtcdRegistry, NodeSource, UrlList
    from curvechat.server.httpguard import HttpTokenError, load_or_create_token

    if args.interval <= 0 or args.history < 60:
        raise CliError(
            "bad_argument", "--interval must be positive and --history at least 60", EXIT_USAGE
        )
    _host, colon, port = args.http.rpartition(":")
    if not colon or not port.isdigit():
        raise CliError("bad_argument", f"--http {args.http!r}: give HOST:PORT", EXIT_USAGE)
    etcd_flags = (args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_user)
    source: NodeSource
    if args.store:
        if args.node:
            raise CliError("bad_argument", "give --node URLs or --store, not both", EXIT_USAGE)
        from curvechat.store.etcd import EtcdSecurity

        try:
            security = EtcdSecurity.load(
                args.store,
                ca_file=args.etcd_ca,
                cert_file=args.etcd_cert,
                key_file=args.etcd_key,
                user=args.etcd_user,
                password_file=args.etcd_password_file,
            )
            source = EtcdRegistry(args.store, security)
        except ValueError as exc:
            raise CliError("bad_argument", f"--store: {exc}", EXIT_USAGE) from exc
    elif any(etcd_flags) or args.etcd_password_file:
        raise CliError("bad_argument", "the --etcd-* options need --store", EXIT_USAGE)
    else:
        try:
            source = UrlList(args.node or ["http://127.0.0.1:7780"])
        except ValueError as exc:
            raise CliError("bad_argument", f"--node: {exc}", EXIT_USAGE) from exc
    node_token = ""
    try:
        if args.node_token_file:
            if not Path(args.node_token_file).is_file():
                raise CliError("node_token_file", f"no token file at {args.node_token_file}")
            node_token = load_or_create_token(Path(args.node_token_file))
        data = Path(args.data or os.environ.get("CURVECHAT_MONITOR_DATA", "monitor-data"))
        asyncio.run(
            run_monitor(
                data,
                source,
                http=args.http,
                node_token=node_token,
                http_hosts=args.http_host,
                http_token_file=Path(args.http_token_file) if args.http_token_file else None,
                http_require_token=args.http_require_token,
                interval=args.interval,
                history_s=args.history,
            )
        )
    except HttpTokenError as exc:
        raise CliError("http_token", str(exc)) from exc
    except MonitorError as exc:
        raise CliError("refused_to_start", str(exc)) from exc
    except OSError as exc:
        raise CliError("bind_failed", str(exc)) from exc
    return 0


# --- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curvechat", description="End-to-end encrypted chat.")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a server node")
    serve.add_argument("--data", help="data directory (default ./data or $CURVECHAT_DATA)")
    serve.add_argument("--bind", default="tcp://127.0.0.1:7700", help="ZeroMQ endpoint to bind")
    serve.add_argument(
        "--http",
        default="127.0.0.1:7780",
        help="HOST:PORT for the dashboard, health and metrics ('' to disable)",
    )
    serve.add_argument(
        "--http-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the HTTP side answers to, besides its address (repeatable);"
        " requests for any other name get 421",
    )
    serve.add_argument(
        "--http-token-file",
        metavar="PATH",
        help="the HTTP bearer token, made there if missing (default DATA/http.token);"
        " give every node of a cluster the same one",
    )
    serve.add_argument(
        "--http-require-token",
        action="store_true",
        help="require the token on loopback too (it is always required on other addresses)",
    )
    serve.add_argument(
        "--metrics-open",
        action="store_true",
        help="serve /metrics without the token (for a scraper that cannot send one)",
    )
    serve.add_argument("--advertise", help="endpoint to put in the connect string")
    serve.add_argument(
        "--link-bind",
        metavar="ENDPOINT",
        help="cluster mode: where this node listens for other nodes forwarding sends to"
        " the rooms it owns (default: the --bind host, any free port), e.g. tcp://0.0.0.0:7701",
    )
    serve.add_argument(
        "--node-name",
        metavar="NAME",
        help="this node's name in the dashboard, metrics and welcome (kept in DATA/node.id;"
        " default: made on first start from the host name)",
    )
    serve.add_argument(
        "--rate-conn",
        type=float,
        default=500.0,
        help="requests/s one connection may sustain (default 500)",
    )
    serve.add_argument(
        "--rate-user",
        type=float,
        default=1000.0,
        help="requests/s one user may sustain over all connections (default 1000)",
    )
    serve.add_argument(
        "--influx",
        metavar="URL",
        help="also push metrics to InfluxDB: a write URL "
        "(http://HOST:8086/write?db=curvechat) or a base URL with --influx-db",
    )
    serve.add_argument(
        "--influx-db", help="InfluxDB database (default: from the URL, or curvechat)"
    )
    serve.add_argument(
        "--influx-interval",
        type=float,
        default=10.0,
        help="seconds between pushes to InfluxDB (default 10)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="etcd://HOST:PORT[,HOST:PORT…][/PREFIX] (etcds://… for TLS): keep everything"
        " in etcd and join the cluster of nodes on it (default: SQLite in the data dir)",
    )
    serve.add_argument(
        "--etcd-ca",
        metavar="FILE",
        help="CA certificate(s) etcd's are checked with (PEM; default: the system's)",
    )
    serve.add_argument(
        "--etcd-cert", metavar="FILE", help="this node's TLS client certificate for etcd (PEM)"
    )
    serve.add_argument("--etcd-key", metavar="FILE", help="the key of --etcd-cert (PEM)")
    serve.add_argument(
        "--etcd-user", metavar="NAME", help="etcd user to log in as (needs etcds://)"
    )
    serve.add_argument(
        "--etcd-password-file",
        metavar="FILE",
        help="file holding the etcd user's password (default: $CURVECHAT_ETCD_PASSWORD;"
        " never on the command line, where ps shows it)",
    )
    serve.add_argument(
        "--etcd-max-txn-ops",
        type=int,
        default=128,
        metavar="N",
        help="operations per etcd transaction; must not exceed the etcd cluster's"
        " --max-txn-ops (default 128, etcd's default)",
    )
    serve.add_argument(
        "--etcd-quota-bytes",
        type=int,
        metavar="N",
        help="etcd's --quota-backend-bytes, for the quota gauges and events when etcd"
        " does not report it (etcd before 3.6); default 2147483648, etcd's default",
    )
    serve.set_defaults(func=cmd_serve)

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
        "--interval", type=float, default=1.0, help="seconds between polls of a node (default 1)"
    )
    mon.add_argument(
        "--history",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how much metric history to keep, in memory and on disk (default 3600)",
    )
    mon.set_defaults(func=cmd_monitor)
    from curvechat.cli.drain import add_parser as add_drain_parser

    add_drain_parser(sub)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--home", help="client home (identity, cache); default $CURVECHAT_HOME or the XDG data dir"
    )
    client.add_argument(
        "--server", help="connect string (default $CURVECHAT_SERVER, then the last one used)"
    )
    client.add_argument("--passphrase-file", help="read the identity passphrase from this file")
    client.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds to wait for a reply or an acknowledgement once connected (default 15)",
    )
    client.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for a server before working offline"
        " (default $CURVECHAT_CONNECT_TIMEOUT, else 3)",
    )

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, parents=[client], help=help)
        p.set_defaults(func=func)
        return p

    add("init", cmd_init, "create an identity (and register it)").add_argument(
        "--user", required=True
    )
    p = add("create", cmd_create, "create a room")
    p.add_argument("room")
    p.add_argument("--members", help="comma-separated users to add")
    for name, func, text in [
        ("invite", cmd_invite, "add a member (admins)"),
        ("remove", cmd_remove, "remove a member (admins)"),
        ("promote", cmd_promote, "make a member an admin (admins)"),
    ]:
        p = add(name, func, text)
        p.add_argument("room")
        p.add_argument("user")
    add("leave", cmd_leave, "leave a room").add_argument("room")
    p = add("dm", cmd_dm, "send a direct message")
    p.add_argument("user")
    p.add_argument("text")
    p = add("send", cmd_send, "send a message ('-' reads lines from stdin)")
    p.add_argument("room")
    p.add_argument("text")
    p = add("history", cmd_history, "show a room's history")
    p.add_argument("room", help="room id, or @user for a direct-message room")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    add("rooms", cmd_rooms, "list your rooms").add_argument("--json", action="store_true")
    add("members", cmd_members, "list a room's members").add_argument("room")
    p = add("keys", cmd_keys, "fingerprints and safety numbers; accept a changed key")
    p.add_argument("user", nargs="?", help="show this user only")
    p.add_argument("--accept", metavar="USER", help="accept the changed key of USER")
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


def _fail(code: str, message: str, exit_code: int) -> NoReturn:
    print(error_line(code, message), file=sys.stderr)
    raise SystemExit(exit_code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2)
        if args.command not in ("serve", "monitor")
        else logging.INFO - 10 * min(args.verbose, 1),
        handlers=[log_handler(logging.StreamHandler())],
    )
    if getattr(args, "limit", 1) < 1 or getattr(args, "timeout", 1) <= 0:
        _fail("bad_argument", "--limit and --timeout must be positive", EXIT_USAGE)
    from curvechat.client.errors import ServerRefused
    from curvechat.protocol import ProtocolError
    from curvechat.protocol.errors import CurvechatError

    try:
        return int(args.func(args))
    except CliError as exc:
        _fail(exc.code, exc.message, exc.exit_code)
    except (ServerRefused, ProtocolError) as exc:
        _fail(str(exc.code), exc.message, EXIT_FAIL)
    except CurvechatError as exc:
        _fail(str(exc.code), str(exc), EXIT_FAIL)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
