"""What the peer listener takes in from each connection (sans-IO).

The listener's socket takes every frame in: a queue bounded in libzmq
(8 frames a connection, each up to `MAX_PEER_FRAME`) let a peer abort the
whole client, by resetting a
connection whose queue was full with a beat of its own among the bytes
libzmq had read past it (curvechat/heartbeats.py). So the bound that queue
set is kept here instead, per connection (its routing id): at most
`PENDING` of its frames taken in and not yet answered. A frame past that,
or one the pacing refuses (N10), is refused unread; a connection with
`CUT_AFTER` refusals in a row is one that does not wait for its answers,
and is cut: the listener shuts its TCP connection down, and drops what it
still reads of it. The member may connect again (its key is still
admitted), and starts afresh.

This module must never do I/O nor read a clock: the listener asks it about
each frame and tells it what it answered.
"""

from __future__ import annotations

import enum
from typing import Final

PENDING: Final = 8
"""Frames of one connection taken in and not yet answered (what the
socket's queue held before)."""
CUT_AFTER: Final = 64
"""Refusals in a row that cut a connection: an honest dialer asks one
request at a time and waits for its answer."""
CUT_KEPT: Final = 1024
"""Cut connections remembered (their frames still in the socket are
dropped), and connections whose refusals in a row are counted."""


class Take(enum.Enum):
    TAKE = "take"
    """Queue it to be answered."""
    REFUSE = "refuse"
    """Answer it with the refusal, unread."""
    CUT = "cut"
    """Shut the connection down now; nothing is answered."""
    DROP = "drop"
    """A frame of a connection already cut: nothing."""


class Intake:
    def __init__(self, pending: int = PENDING, cut_after: int = CUT_AFTER) -> None:
        self.pending_max = pending
        self.cut_after = cut_after
        self._pending: dict[bytes, int] = {}
        self._refused: dict[bytes, int] = {}  # refusals in a row, by connection
        self._cut: dict[bytes, None] = {}  # in the order cut
        self.cuts = 0

    def was_cut(self, conn: bytes) -> bool:
        """Whether `conn` was cut: its frames are dropped before anything
        else is asked of them (the pacing, its key)."""
        return conn in self._cut

    def frame(self, conn: bytes, refusal: str | None) -> Take:
        """A frame of connection `conn`, and what the pacing said of it
        (None: it may be read)."""
        if conn in self._cut:
            return Take.DROP
        if refusal is None and self._pending.get(conn, 0) < self.pending_max:
            self._pending[conn] = self._pending.get(conn, 0) + 1
            self._refused.pop(conn, None)
            return Take.TAKE
        refused = self._refused[conn] = self._refused.get(conn, 0) + 1
        if refused < self.cut_after:
            if len(self._refused) > CUT_KEPT:  # connections long gone
                del self._refused[next(iter(self._refused))]
            return Take.REFUSE
        self._refused.pop(conn, None)
        self._pending.pop(conn, None)
        self._cut[conn] = None
        if len(self._cut) > CUT_KEPT:
            del self._cut[next(iter(self._cut))]
        self.cuts += 1
        return Take.CUT

    def answered(self, conn: bytes) -> None:
        """A frame of `conn` that was taken in was answered (or never will be)."""
        left = self._pending.get(conn, 0) - 1
        if left > 0:
            self._pending[conn] = left
        else:
            self._pending.pop(conn, None)
