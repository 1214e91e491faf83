"""Reaching a server from the command line, or knowing soon that none will
answer.

A command waits at most the connect timeout (`--connect-timeout`,
`$CURVECHAT_CONNECT_TIMEOUT`, default 3 s) for a node to welcome it, and
less when the failed attempts already tell (`servers.verdict`): nothing
listens on any node (offline at once), or a node failed the CURVE handshake
(a wrong server key, reported at once as `key_mismatch`; waiting cannot
help). Messages queued by an earlier command (offline, or killed) go out as
soon as the client is synced, before the command's own: it waits for them
as long as they keep being acknowledged (`--timeout` at most for each next
one, as `send` waits for its own), and says only at its end how many are
still not acknowledged.

It must never decide what a failure means (that is `servers.verdict`) nor
print what a command answers: it only waits, and says what it waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curvechat.client import events as ev
from curvechat.client.enroll import reach_node
from curvechat.client.recall import last_sync_ms
from curvechat.protocol.text import clip, visible

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient
    from curvechat.client.errors import ServerRefused
    from curvechat.client.model import OutboxItem

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


class Acks:
    """Sends awaited in the order they were queued: how many the server
    acknowledged, which it refused, and which are left. The one waiting
    logic of the commands that send, `send` and `dm` for their own messages
    and every command that connects for those an earlier one left queued."""

    def __init__(self, client: ChatClient, txns: list[str]) -> None:
        self.client = client
        self.left: deque[str] = deque(txns)
        self.acked = 0
        self.failed: list[tuple[str, ServerRefused]] = []

    async def wait(self, timeout: float) -> bool:
        """Wait for each send in turn, `timeout` seconds at most for each
        next answer: many messages take as long as the server keeps
        answering. True when none is left. (`timeout` 0 takes the answers
        that came meanwhile, and waits for none.)"""
        from curvechat.client.errors import NotReady, RequestTimeout, ServerRefused

        while self.left:
            try:
                await self.client.wait_ack(self.left[0], timeout)
                self.acked += 1
            except ServerRefused as exc:
                self.failed.append((self.left[0], exc))
            except (RequestTimeout, NotReady):  # NotReady: its answer is no longer kept
                return False
            self.left.popleft()
        return True


class Queued:
    """What this command does with the messages an earlier one left in the
    outbox (killed, or offline): they go out first, in order; what became of
    them is said on stderr as it is known, and what is still not
    acknowledged only at the command's end, when this one sends no more."""

    def __init__(self, client: ChatClient, items: list[OutboxItem]) -> None:
        self.rooms = {i.txn: i.room for i in items}
        self.acks = Acks(client, [i.txn for i in items])
        self._sent = 0  # of the acked, how many were said
        self._failed = 0  # of the failed, how many were said

    def tell(self) -> None:
        """Say what became of them since last told."""
        sent = self.acks.acked - self._sent
        if sent:
            more = " more" if self._sent else ""
            print(f"curvechat: sent {sent}{more} queued message(s) from before", file=sys.stderr)
        for txn, exc in self.acks.failed[self._failed :]:
            print(
                f"curvechat: a queued message for {visible(self.rooms[txn])} from before was"
                f" not sent [{visible(exc.code)}]: {visible(exc.message)}",
                file=sys.stderr,
            )
        self._sent, self._failed = self.acks.acked, len(self.acks.failed)

    async def finish(self) -> None:
        """At the command's end: the answers that came while it went on, and
        how many are still not acknowledged."""
        await self.acks.wait(0)
        self.tell()
        if self.acks.left:
            print(
                not_acked_line(self.acks.client, len(self.acks.left), "queued message(s)"),
                file=sys.stderr,
            )


def not_acked_line(client: ChatClient, count: int, what: str) -> str:
    """The stderr line for `count` messages left in the outbox, and why if
    the node said (`Outbox.held`)."""
    why = client.outbox.held or "they may have reached the server already"
    return (
        f"curvechat: {count} {what} not yet acknowledged ({why}); the next command that"
        " connects sends them again (the server keeps each once)"
    )


async def deliver_queued(client: ChatClient, timeout: float) -> Queued:
    """Send the messages an earlier command left in the outbox before this
    one's own, waiting for them as long as they keep being acknowledged
    (`timeout` at most for each next one; `Acks.wait`), and say how many
    went out; `Queued.finish` says at the end what is still not
    acknowledged. Those held by a key change wait for the user, not for
    this; those the node refused for good (the user left the room
    meanwhile) are said."""
    items = [i for i in client.pending() if not client.core.key_change_in(i.room)]
    client.expect_acks(items)
    queued = Queued(client, items)
    await queued.acks.wait(timeout)
    queued.tell()
    return queued
