"""`curvechat drain`: empty a node before a restart.

It talks to the node's HTTP side (`/api/drain`, `curvechat.server.drain`)
with the node's bearer token, read from the node's data directory (or
`--http-token-file`): only who can read that file may drain a node. When
the data directory names the node (its `node.id`), the node that answers
at `--http` must be that one (nodes of a cluster share one token, so a
wrong `--http` would otherwise drain another node). The
node then refuses new connections and asks its clients to move to other
nodes; the command waits until none is left (or `--timeout`), printing
how many remain. `--cancel` makes the node take clients again; `--status`
only shows where the drain stands.

Exit codes: 0 drained (or done); 1 clients still there at the timeout,
or the node refused; 2 usage; 3 the node's HTTP side did not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from curvechat.cli.common import EXIT_UNREACHABLE, EXIT_USAGE, CliError, finite_float
from curvechat.protocol.text import visible

POLL_S = 0.2
REQUEST_TIMEOUT_S = 5.0
_HOST_PORT = re.compile(r"(?:https?://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "drain",
        help="move a node's clients to the other nodes and take no new ones (before a restart)",
    )
    p.add_argument(
        "--http",
        default="127.0.0.1:7780",
        metavar="HOST:PORT",
        help="the node's HTTP side, as given to `serve --http` (default 127.0.0.1:7780)",
    )
    p.add_argument("--data", help="the node's data directory (default ./data or $CURVECHAT_DATA)")
    p.add_argument("--http-token-file", help="the node's HTTP token (default DATA/http.token)")
    p.add_argument(
        "--timeout",
        type=finite_float,
        default=300.0,
        help="seconds to wait for the last client to leave (default 300)",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--no-wait", action="store_true", help="start draining and return")
    what.add_argument("--cancel", action="store_true", help="stop draining: take clients again")
    what.add_argument("--status", action="store_true", help="only show the drain's state")
    p.set_defaults(func=cmd_drain)


def base_url(text: str) -> str:
    """`HOST:PORT` (or `http://HOST:PORT/`) → `http://HOST:PORT`."""
    found = _HOST_PORT.fullmatch(text.strip())
    if found is None or not 1 <= int(found.group(2)) <= 65535:
        raise CliError("bad_argument", f"--http {text!r}: give HOST:PORT", EXIT_USAGE)
    scheme = "https" if text.strip().startswith("https://") else "http"
    return f"{scheme}://{found.group(1)}:{int(found.group(2))}"


def read_token(args: argparse.Namespace) -> str:
    from curvechat.server.httpguard import TOKEN_FILE, HttpTokenError, load_or_create_token

    if args.http_token_file:
        path = Path(args.http_token_file)
    else:
        path = Path(args.data or os.environ.get("CURVECHAT_DATA", "data")) / TOKEN_FILE
    if not path.is_file():
        raise CliError(
            "http_token",
            f"no token file at {path}: give the node's --data, or --http-token-file",
        )
    try:
        return load_or_create_token(path)
    except HttpTokenError as exc:
        raise CliError("http_token", str(exc)) from exc
    except OSError as exc:
        raise CliError("http_token", f"cannot read {path}: {exc.strerror}") from exc


def data_node_name(args: argparse.Namespace) -> str | None:
    """The name of the node whose data directory was given (or is the
    default one), from its DATA/node.id; None when there is none to check."""
    from curvechat.server.app import NODE_ID_FILE
    from curvechat.server.liveness import valid_node_name

    if args.data is None and args.http_token_file and "CURVECHAT_DATA" not in os.environ:
        return None  # no data directory named: nothing to check against
    path = Path(args.data or os.environ.get("CURVECHAT_DATA", "data")) / NODE_ID_FILE
    try:
        name = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not valid_node_name(name):
        raise CliError("bad_config", f"{path} holds no valid node name")
    return name


def call(url: str, method: str, token: str) -> dict[str, Any]:
    """One request to `/api/drain`; the node's JSON answer."""
    req = urllib.request.Request(
        url + "/api/drain",
        method=method,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            body = json.loads(resp.read(1 << 20))
    except urllib.error.HTTPError as exc:
        raise _refused(exc) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            "unreachable",
            f"the node's HTTP side at {url} did not answer ({reason})",
            EXIT_UNREACHABLE,
        ) from None
    except ValueError as exc:
        raise CliError("bad_answer", f"{url} answered something that is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("clients"), int):
        raise CliError("bad_answer", f"{url} is not a curvechat node that knows how to drain")
    return body


def _refused(exc: urllib.error.HTTPError) -> CliError:
    if exc.code == 401:
        return CliError(
            "unauthorized",
            "the node refused the token: give the token file the node was started with"
            " (--http-token-file, as given to `serve`; DATA/http.token by default)",
        )
    if exc.code == 404:
        return CliError("bad_answer", "this node does not know how to drain (an older version?)")
    if exc.code == 421:
        return CliError("misdirected", "the node does not answer to that host name (--http-host)")
    return CliError("http_error", f"the node answered HTTP {exc.code}")


def cmd_drain(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise CliError("bad_argument", "--timeout must be positive", EXIT_USAGE)
    url = base_url(args.http)
    token = read_token(args)
    expected = data_node_name(args)
    if expected is not None:  # the node that answers must be the one DATA belongs to
        answered = str(call(url, "GET", token).get("node", "?"))
        if answered != expected:
            raise CliError(
                "wrong_node",
                f"the node at {url} is {visible(answered)}, not {expected} (whose data"
                " directory this is): give that node's HTTP side with --http",
            )
    method = "GET" if args.status else "DELETE" if args.cancel else "POST"
    state = call(url, method, token)
    node = str(state.get("node", "?"))
    if args.status or args.cancel:
        doing = "draining" if state.get("draining") else "taking clients"
        print(f"node {node}: {doing}, {state['clients']} client(s) connected", flush=True)
        return 0
    print(f"node {node}: draining, {state['clients']} client(s) asked to move", flush=True)
    if args.no_wait:
        return 0
    t0 = time.monotonic()
    left = int(state["clients"])
    while left:
        if time.monotonic() - t0 > args.timeout:
            raise CliError(
                "not_drained",
                f"{left} client(s) still on node {node} after {args.timeout:g} s"
                " (clients too old to move stay until they leave)",
            )
        time.sleep(POLL_S)
        now = int(call(url, "GET", token)["clients"])
        if now != left:
            print(f"node {node}: {now} client(s) left", flush=True)
        left = now
    took = time.monotonic() - t0
    print(f"node {node} drained in {took:.1f} s: no client left; it can be stopped", flush=True)
    return 0


__all__ = ["add_parser", "cmd_drain"]
