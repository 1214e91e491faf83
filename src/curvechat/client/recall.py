"""What a client remembers between runs about its servers, in the local
cache's meta table: the node that answered last and the live nodes its
welcome named (those the connect string gives ranked first next time, so
a cluster node that is down costs nothing; the others after the given
ones: `servers.attempt_order`), and when the cache was last known to be in
sync with a server (what an offline answer tells).

Both are kept per connect string: given another one, the client starts
from that string's nodes alone. This module never opens a
socket; it only reads and writes those two meta rows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from typing import TYPE_CHECKING

from curvechat.client import events as ev
from curvechat.client.state import ConnState
from curvechat.protocol.connect import (
    ConnectStringError,
    ServerAddress,
    format_connect,
    parse_connect,
)
from curvechat.protocol.limits import MAX_PEERS

if TYPE_CHECKING:
    from curvechat.client.cache import Cache
    from curvechat.client.engine import ChatClient

LAST_NODE = "last_node"
LAST_SYNC = "last_sync_ms"


def remembered_node(cache: Cache, given: list[ServerAddress]) -> ServerAddress | None:
    """The node that answered last for the connect string `given`, if any."""
    text = cache.get_meta(LAST_NODE)
    if not text:
        return None
    try:
        row = json.loads(text)
        if row.get("given") != format_connect(given):
            return None
        found = parse_connect(str(row["node"]))
    except (ValueError, KeyError, TypeError, AttributeError, ConnectStringError):
        return None
    return found[0] if len(found) == 1 else None


def remembered_live(cache: Cache, given: list[ServerAddress]) -> list[str]:
    """The live nodes the last welcome named, for the connect string `given`
    (connect items; [] if none are remembered)."""
    text = cache.get_meta(LAST_NODE)
    try:
        row = json.loads(text) if text else {}
        live = row.get("live", []) if row.get("given") == format_connect(given) else []
    except (ValueError, AttributeError):
        return []
    if not isinstance(live, list):
        return []
    return [str(x) for x in live if isinstance(x, str)][:MAX_PEERS]


def last_sync_ms(cache: Cache) -> int | None:
    """When the cache was last known in sync with a server (ms since the
    epoch), or None if it never was."""
    text = cache.get_meta(LAST_SYNC)
    try:
        return int(text) if text else None
    except ValueError:
        return None


class Recall:
    """Keeps the two rows up to date from the engine's events: the node on
    every (re)connection, the sync time when a sync completes and when a
    live connection ends (it was in sync until then)."""

    def __init__(self, client: ChatClient, given: list[ServerAddress]) -> None:
        self.client = client
        self.given = format_connect(given)
        self.node: str | None = None
        self.live = False

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.CaughtUp):
            self._write(LAST_SYNC, str(int(time.time() * 1000)))
        elif isinstance(event, ev.StatusChanged):
            live = event.status.state is ConnState.LIVE
            if self.live and not live:
                self._write(LAST_SYNC, str(int(time.time() * 1000)))
            self.live = live
            if live and event.status.endpoint != self.node:
                self.node = event.status.endpoint
                self._remember(event.status.endpoint)

    def _remember(self, endpoint: str | None) -> None:
        addresses: list[ServerAddress] = self.client.conn.addresses
        node = next((a for a in addresses if a.endpoint == endpoint), None)
        if node is not None:
            servers = getattr(self.client.conn, "servers", None)  # a test may swap in a double
            live = [str(a) for a in getattr(servers, "live", None) or []]
            row = {"given": self.given, "node": str(node), "live": live}
            self._write(LAST_NODE, json.dumps(row))

    def _write(self, key: str, value: str) -> None:
        # the cache may be closing under a last status change
        with contextlib.suppress(sqlite3.ProgrammingError):
            self.client.cache.set_meta(key, value)
