"""The `serve` command's flags and help texts (`cli/parser.py` builds the
rest of the command line).

It must never run anything: it only says what the command line means.
"""

from __future__ import annotations

import argparse
from typing import Any

from curvechat.cli.common import finite_float
from curvechat.cli.serve import cmd_serve
from curvechat.server.addresses import DEFAULT_PER_ADDRESS


def add_serve(sub: Any) -> argparse.ArgumentParser:
    """Add `serve` to the subcommands `sub`; returns its parser."""
    serve: argparse.ArgumentParser = sub.add_parser("serve", help="run a server node")
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
        "--link-advertise",
        metavar="ENDPOINT",
        help="cluster mode: the node link's endpoint as other nodes reach it, when that is"
        " not the --bind host and the bound port (a NAT or a proxy), e.g. tcp://10.0.0.11:7701",
    )
    serve.add_argument(
        "--node-name",
        metavar="NAME",
        help="this node's name in the dashboard, metrics and welcome (kept in DATA/node.id;"
        " default: made on first start from the host name)",
    )
    serve.add_argument(
        "--rate-conn",
        type=finite_float,
        default=500.0,
        help="requests/s one connection may sustain (default 500)",
    )
    serve.add_argument(
        "--rate-user",
        type=finite_float,
        default=1000.0,
        help="requests/s one user may sustain over all connections (default 1000)",
    )
    serve.add_argument(
        "--rate-user-bytes",
        type=finite_float,
        default=256 * 1024,
        help="bytes of requests/s one user may sustain over all connections,"
        " after 16 s worth at once (default 262144)",
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=int,
        default=DEFAULT_PER_ADDRESS,
        metavar="N",
        help="connections one IPv4 address or IPv6 /64 may hold on the client port; more are"
        f" closed as they come (default {DEFAULT_PER_ADDRESS}; 0: no limit; loopback"
        " addresses are not counted)",
    )
    serve.add_argument(
        "--registrations-per-address",
        type=finite_float,
        default=30.0,
        metavar="N",
        help="new users (or keys) one IPv4 address or IPv6 /48 may register an hour, after"
        " as many at once (default 30; 0: no limit; loopback addresses are not counted)",
    )
    serve.add_argument(
        "--count-loopback",
        action="store_true",
        help="count loopback addresses against --max-connections-per-address and"
        " --registrations-per-address too",
    )
    serve.add_argument(
        "--rate-epochs",
        type=finite_float,
        default=1.0,
        help="new epochs/s one member may start in one room, after 20 at once (default 1)",
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
        type=finite_float,
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
    serve.add_argument(
        "--etcd-slow-ms",
        type=int,
        metavar="MS",
        help="a round trip to the quickest etcd member longer than this, twice in a row,"
        " makes the node hand its rooms and clients to quicker nodes (default 150;"
        " docs/operations.md, 'A node whose etcd is slow')",
    )
    serve.add_argument(
        "--rebalance-after",
        type=float,
        metavar="S",
        help="ask a client to move to the node it would pick, or to a node with fewer"
        " clients, once that node has been up this long (10 or more, default 30; 0: never;"
        " docs/operations.md, 'Clients back home, and spread evenly')",
    )
    serve.add_argument(
        "--disk-reserve-mb",
        type=int,
        metavar="MIB",
        help="free space to keep on the embedded store's disk: under it, new messages,"
        " users and rooms are refused (store_full) until space is freed (default 256;"
        " 0: off; docs/operations.md)",
    )
    serve.set_defaults(func=cmd_serve)
    return serve
