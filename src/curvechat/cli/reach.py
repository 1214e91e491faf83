"""Reaching a server from the command line, or knowing soon that none will
answer.

A command waits at most the connect timeout (`--connect-timeout`,
`$CURVECHAT_CONNECT_TIMEOUT`, default 3 s) for a node to welcome it, and
less when the failed attempts already tell (`servers.verdict`): nothing
listens on any node (offline at once), or a node failed the CURVE handshake
(a wrong server key, reported at once as `key_mismatch`; waiting cannot
help). Messages queued by an earlier offline command go out as soon as the
client is synced, and a command that connected waits for them before it
ends.

It must never decide what a failure means (that is `servers.verdict`) nor
print what a command answers: it only waits, and says what it waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curvechat.client import events as ev
from curvechat.client.enroll import reach_node
from curvechat.client.recall import last_sync_ms
from curvechat.protocol.text import clip, visible

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient

DEFAULT_CONNECT_TIMEOUT = 3.0
CONNECT_TIMEOUT_ENV = "CURVECHAT_CONNECT_TIMEOUT"


def connect_timeout(args: argparse.Namespace) -> float:
    """The connect timeout: the flag, else the environment, else the
    default. Raises ValueError for a value that is not a positive number
    (nor inf or nan, which the flag's type refuses too: `finite_float`)."""
    given = getattr(args, "connect_timeout", None)
    if given is None:
        text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_CONNECT_TIMEOUT
        try:
            given = float(text)
        except ValueError:
            raise ValueError(f"${CONNECT_TIMEOUT_ENV}={clip(text)!r} is not a number") from None
        if not math.isfinite(given):
            raise ValueError(f"${CONNECT_TIMEOUT_ENV}={clip(text)!r} is not a finite number")
    if not given > 0:
        raise ValueError("the connect timeout must be positive")
    return float(given)


@dataclass(frozen=True, slots=True)
class Offline:
    """No server answered: why, and when the cache was last in sync."""

    why: str
    last_sync_ms: int | None

    def note(self) -> str:
        """The stderr line of a command that answers from the local cache."""
        return (
            f"curvechat: offline ({visible(self.why)}); from the local cache, "
            f"last synced {synced_words(self.last_sync_ms, time.time())}"
        )


def synced_words(ms: int | None, now: float) -> str:
    """'2026-12-02 19:30:12 (4 min ago)', in local time; or 'never'."""
    if ms is None:
        return "never"
    when = dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    ago = max(0, int(now - ms / 1000))
    if ago < 60:
        span = f"{ago} s"
    elif ago < 3600:
        span = f"{ago // 60} min"
    elif ago < 2 * 86400:
        span = f"{ago // 3600} h"
    else:
        span = f"{ago // 86400} days"
    return f"{when} ({span} ago)"


async def reach(client: ChatClient, timeout: float) -> Offline | None:
    """Wait until `client`'s connection is live (None), or no node can
    answer (`Offline`): every node refused or failed, or `timeout` passed.
    Raises KeyMismatch the moment the failures say a server key is wrong."""
    changed = asyncio.Event()

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.StatusChanged):
            changed.set()

    client.subscribe(on_event)
    why = await reach_node(client.conn, timeout, changed)
    return None if why is None else Offline(why, last_sync_ms(client.cache))


async def deliver_queued(client: ChatClient, timeout: float) -> None:
    """Wait (at most `timeout`) for the messages an earlier command left in
    the outbox; say on stderr how many went out, and how many wait still.
    Those held by a key change wait for the user, not for this; those the
    node refused for good (the user left the room meanwhile) are said."""
    core = client.core
    todo = {i.txn for i in client.pending() if not core.key_change_in(i.room)}
    if not todo:
        return
    done = asyncio.Event()
    sent: set[str] = set()
    failed: list[ev.SendFailed] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.SendAcked | ev.SendFailed) and event.txn in todo:
            todo.discard(event.txn)
            if isinstance(event, ev.SendAcked):
                sent.add(event.txn)
            else:
                failed.append(event)
            if not todo:
                done.set()

    client.subscribe(on_event)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await done.wait()
    if sent:
        print(f"curvechat: sent {len(sent)} queued message(s) from before", file=sys.stderr)
    for f in failed:
        print(
            f"curvechat: a queued message for {visible(f.room)} from before was not sent"
            f" [{visible(f.code)}]: {visible(f.message)}",
            file=sys.stderr,
        )
    if todo:
        print(
            f"curvechat: {len(todo)} queued message(s) not yet acknowledged (they may"
            " have reached the server already); the next command that connects sends them"
            " again (the server keeps each once)",
            file=sys.stderr,
        )
