"""The engine's queue of pushes waiting for its worker, bounded.

The node socket's reader takes every push out of libzmq's bounded queue at
once and puts it here, while the worker may be busy (a sync, a request that
waits for its answer). So this queue holds at most `MAX_PUSHES` pushes and
`MAX_BYTES` bytes of them (a message push counts as its envelope's size in
a frame, any other push as `OTHER_PUSH_BYTES`); a queue that is empty takes
any one push. A push that does not fit is dropped and the queue remembers
it (`overflowed`): the worker, once it has drained the queue, syncs from
its cursors (as after a reconnect), which fetches what the dropped pushes
told (a dropped message push is also found as a gap in seqs at the next one
that comes).

This module must never grow past its bounds, whatever a node sends, nor
drop a push without setting `overflowed`; it does no I/O, does not log, and
does not interpret a push beyond its size.
"""

from __future__ import annotations

import asyncio

from curvechat.protocol import messages as m
from curvechat.protocol.peer import envelope_size

MAX_PUSHES = 10_000
"""Pushes the queue holds at most."""

MAX_BYTES = 16 * 1024 * 1024
"""Bytes of pushes the queue holds at most (16 MiB)."""

OTHER_PUSH_BYTES = 256
"""What a push other than a message counts for (about its size in a frame)."""

CATCH_UP_TURNS = 8
"""Worker turns after a drop before the sync that fetches what was dropped,
even if the queue has not emptied (a flood that never lets up)."""

PUSH_BURST = 128
"""At most this many queued pushes are handled in one go (its verification
runs without a break: this bounds how long other tasks wait)."""


def bursts(pushes: list[m.AnyReply]) -> list[list[m.AnyReply]]:
    """Pushes as they are handled: a run of message pushes is split by room
    (each room's pushes keep their order), anything else goes alone and in
    its place."""
    out: list[list[m.AnyReply]] = []
    run: dict[str, list[m.AnyReply]] = {}
    for push in pushes:
        if isinstance(push, m.MessagePush):
            run.setdefault(push.room, []).append(push)
            continue
        out.extend(run.values())
        run = {}
        out.append([push])
    out.extend(run.values())
    return out


def push_size(push: m.AnyReply) -> int:
    """About how many bytes `push` takes: a message push its envelope's size."""
    if isinstance(push, m.MessagePush):
        return envelope_size(push.message.envelope)
    return OTHER_PUSH_BYTES


class PushQueue:
    """A FIFO of pushes with `asyncio.Queue`'s `get`, `get_nowait`, `empty`
    and `qsize`; `put_nowait` drops what does not fit."""

    def __init__(self, max_pushes: int = MAX_PUSHES, max_bytes: int = MAX_BYTES) -> None:
        self.max_pushes = max_pushes
        self.max_bytes = max_bytes
        self.overflowed = False
        """A push was dropped since the worker last cleared this (before the
        sync that fetches what was dropped; set again if that sync fails)."""
        self.dropped = 0
        """Pushes dropped since the queue was made."""
        self._items: asyncio.Queue[tuple[m.AnyReply, int]] = asyncio.Queue()
        self._bytes = 0
        self._turns = 0  # worker turns since a drop, without the sync it calls for

    @property
    def nbytes(self) -> int:
        """Bytes of the pushes queued, as `push_size` counts them."""
        return self._bytes

    def qsize(self) -> int:
        return self._items.qsize()

    def empty(self) -> bool:
        return self._items.empty()

    def put_nowait(self, push: m.AnyReply) -> bool:
        """Queue `push`; False (and `overflowed` set) if it was dropped."""
        size = push_size(push)
        count = self._items.qsize()
        if count and (count >= self.max_pushes or self._bytes + size > self.max_bytes):
            self.overflowed = True
            self.dropped += 1
            return False
        self._items.put_nowait((push, size))
        self._bytes += size
        return True

    async def get(self) -> m.AnyReply:
        """The oldest push, once there is one."""
        push, size = await self._items.get()
        self._bytes -= size
        return push

    def get_nowait(self) -> m.AnyReply:
        """The oldest push; `asyncio.QueueEmpty` if there is none."""
        push, size = self._items.get_nowait()
        self._bytes -= size
        return push

    def catch_up_due(self) -> bool:
        """Asked once a worker turn: whether to sync now for what was dropped
        (the flag is then cleared): once the queue is empty, or after
        CATCH_UP_TURNS turns that did not empty it, so that a flood that
        never lets up does not keep what a dropped push told from being
        fetched."""
        if not self.overflowed:
            self._turns = 0
            return False
        self._turns += 1
        if self._items.empty() or self._turns >= CATCH_UP_TURNS:
            self.overflowed, self._turns = False, 0
            return True
        return False
