"""The two commands that run a process instead of a client: `serve`, a
server node, and `monitor`, the monitoring web application that watches the
nodes from outside. Both check their options before anything starts, so a
bad one is a usage error (exit 2), not a half-started node.

They must never open an identity nor connect as a client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from curvechat.cli.common import EXIT_USAGE, CliError
from curvechat.protocol.text import clip, visible

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdSecurity

# `monitor`: polling more often than this is a load on the nodes, not a
# finer view (they sample once a second); a history longer than a week
# would hold over 1 GB of samples per node in the monitor's memory
# (about 1.8 KB a sample).
MONITOR_INTERVAL_S = (0.2, 3600.0)
MONITOR_HISTORY_S = (60.0, 7 * 86400.0)


def _check_http(value: str) -> None:
    """--http HOST:PORT, the port 0 … 65535 in ASCII digits (0: any free one)."""
    _host, colon, port = value.rpartition(":")
    if not colon or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise CliError(
            "bad_argument",
            f"--http {visible(clip(value))!r}: give HOST:PORT (a port 0-65535)",
            EXIT_USAGE,
        )


_LISTEN_RE = re.compile(
    r"tcp://(\*|\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z](?:[0-9A-Za-z.-]*[0-9A-Za-z])?):([0-9]{1,5}|\*)",
    re.ASCII,
)


def _check_endpoints(args: argparse.Namespace) -> None:
    """--bind and --link-bind: tcp://HOST:PORT to listen on, HOST also *
    (every address), PORT 1-65535, or 0 or * (any free one); --advertise:
    tcp://HOST:PORT as a connect string carries it, with a host clients can
    dial (not a wildcard). A host is at most 253 characters (DNS's limit)."""
    from curvechat.protocol.connect import dialable

    for flag, value in (("--bind", args.bind), ("--link-bind", args.link_bind)):
        found = None if value is None else _LISTEN_RE.fullmatch(value)
        if value is not None and (
            found is None or len(found[1]) > 253 or int(found[2].replace("*", "0")) > 65535
        ):
            raise CliError(
                "bad_argument",
                f"{flag} {visible(clip(value))!r} must look like tcp://HOST:PORT"
                " (a port 1-65535, or 0 or * for any free one)",
                EXIT_USAGE,
            )
    advertise = args.advertise
    if advertise is not None and (
        not dialable(advertise)
        or len(advertise) > len("tcp://:65535") + 253
        or advertise.startswith(("tcp://0.0.0.0:", "tcp://[::]:"))
    ):
        raise CliError(
            "bad_argument",
            f"--advertise {visible(clip(advertise))!r} must look like tcp://HOST:PORT"
            " (a port 1-65535), with a host clients can reach (not 0.0.0.0)",
            EXIT_USAGE,
        )


def cmd_serve(args: argparse.Namespace) -> int:
    from curvechat.server.app import serve
    from curvechat.server.keys import ServerKeyError
    from curvechat.server.ratelimit import RateLimits
    from curvechat.store import NodeNameTaken, StoreRefused, StoreUnavailable

    rates = (args.rate_conn, args.rate_user, args.rate_user_bytes, args.rate_epochs)
    if min(rates) <= 0:
        raise CliError("bad_argument", "rates must be positive", EXIT_USAGE)
    if not 0 <= args.max_connections_per_address <= 1_000_000:
        raise CliError(
            "bad_argument", "--max-connections-per-address must be 0 … 1000000", EXIT_USAGE
        )
    if not 0 <= args.registrations_per_address <= 1_000_000:
        raise CliError(
            "bad_argument", "--registrations-per-address must be 0 … 1000000", EXIT_USAGE
        )
    limits = RateLimits(
        per_connection=args.rate_conn,
        per_user=args.rate_user,
        user_bytes=args.rate_user_bytes,
        new_epochs=args.rate_epochs,
        per_address=args.max_connections_per_address,
        per_address_loopback=args.count_loopback,
        registrations_per_hour=args.registrations_per_address,
    )

    if args.influx_interval <= 0:
        raise CliError("bad_argument", "--influx-interval must be positive", EXIT_USAGE)
    if args.http:
        _check_http(args.http)
    if args.link_bind is not None and not args.store:
        raise CliError("bad_argument", "--link-bind needs --store", EXIT_USAGE)
    _check_endpoints(args)
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
        from curvechat.store.etcd import parse_etcd_url

        try:
            parse_etcd_url(args.store)
        except ValueError as exc:
            raise CliError("bad_argument", f"--store: {exc}", EXIT_USAGE) from exc
        try:
            etcd_security = _etcd_security(args)
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
    if args.etcd_slow_ms is not None:
        if not args.store:
            raise CliError("bad_argument", "--etcd-slow-ms needs --store", EXIT_USAGE)
        if not 10 <= args.etcd_slow_ms <= 60_000:
            raise CliError("bad_argument", "--etcd-slow-ms must be 10 … 60000", EXIT_USAGE)
    if args.rebalance_after is not None:
        if not args.store:
            raise CliError("bad_argument", "--rebalance-after needs --store", EXIT_USAGE)
        if not (args.rebalance_after == 0 or 10 <= args.rebalance_after <= 86_400):
            raise CliError(
                "bad_argument", "--rebalance-after must be 0 (never) or 10 … 86400", EXIT_USAGE
            )
    if args.link_advertise is not None:
        if not args.store:
            raise CliError("bad_argument", "--link-advertise needs --store", EXIT_USAGE)
        found = re.fullmatch(
            r"tcp://([0-9A-Za-z.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(\d{1,5})", args.link_advertise
        )
        if (
            found is None
            or found.group(1) in ("0.0.0.0", "[::]")  # where to listen, not where to reach
            or not 0 < int(found.group(2)) < 65536
        ):
            raise CliError(
                "bad_argument",
                "--link-advertise must look like tcp://HOST:PORT, with a host the other"
                " nodes can reach (not 0.0.0.0)",
                EXIT_USAGE,
            )

    from curvechat.store.reserve import MAX_RESERVE_MB, MIB

    if args.disk_reserve_mb is not None:
        if args.store:
            raise CliError(
                "bad_argument",
                "--disk-reserve-mb is for the embedded store (etcd keeps its own quota)",
                EXIT_USAGE,
            )
        if not 0 <= args.disk_reserve_mb <= MAX_RESERVE_MB:
            raise CliError(
                "bad_argument", f"--disk-reserve-mb must be 0 … {MAX_RESERVE_MB}", EXIT_USAGE
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
                etcd_slow_s=args.etcd_slow_ms / 1000 if args.etcd_slow_ms else None,
                http_hosts=args.http_host,
                http_token_file=Path(args.http_token_file) if args.http_token_file else None,
                http_require_token=args.http_require_token,
                metrics_open=args.metrics_open,
                node_name=args.node_name,
                link_bind=args.link_bind,
                link_advertise=args.link_advertise,
                disk_reserve=None if args.disk_reserve_mb is None else args.disk_reserve_mb * MIB,
                rebalance_after_s=args.rebalance_after,
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
    except OSError as exc:  # anything else the system refused at start-up
        raise CliError("io_error", str(exc)) from exc
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """The monitoring web application: its own process and port, watching
    the nodes from outside (docs/monitoring.md, "The monitor")."""
    from curvechat.monitor.app import run_monitor
    from curvechat.monitor.sources import EtcdRegistry, NodeSource, UrlList
    from curvechat.server.httpguard import load_or_create_token

    for flag, value, (low, high) in (
        ("--interval", args.interval, MONITOR_INTERVAL_S),
        ("--history", args.history, MONITOR_HISTORY_S),
    ):
        if not low <= value <= high:
            raise CliError("bad_argument", f"{flag} must be {low:g} … {high:g} s", EXIT_USAGE)
    _check_http(args.http)
    etcd_flags = (args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_user)
    source: NodeSource
    if args.store:
        if args.node:
            raise CliError("bad_argument", "give --node URLs or --store, not both", EXIT_USAGE)
        try:
            source = EtcdRegistry(args.store, _etcd_security(args))
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
    except OSError as exc:
        raise CliError("io_error", str(exc)) from exc
    return 0


def _etcd_security(args: argparse.Namespace) -> EtcdSecurity:
    """TLS and credentials for --store from the --etcd-* flags (ValueError
    says what is wrong with them). Loads gRPC: only when --store is given."""
    from curvechat.store.etcd import EtcdSecurity

    return EtcdSecurity.load(
        args.store,
        ca_file=args.etcd_ca,
        cert_file=args.etcd_cert,
        key_file=args.etcd_key,
        user=args.etcd_user,
        password_file=args.etcd_password_file,
    )
