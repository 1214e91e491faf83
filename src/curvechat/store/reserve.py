"""The disk space a single node keeps free: new content waits once the
store's disk is nearly full.

What it is for: a node on the embedded store writes every message, user and
room to one SQLite file. Nothing else bounds what all its users together
make it store (each user's bytes are paced, `server/ratelimit.py`, but
accounts cost nothing), so without a floor the file grows until the disk
refuses a write, and then everything else on that disk fails too: the
node's WAL checkpoints, its logs, the machine's other services. The
reserve stops the growth first, while there is room for what must still
work:

* under `min_free` bytes free on the store's filesystem, the store refuses
  new messages, new users, new rooms and contacts with `StoreFull` (the
  client gets `store_full`, keeps its messages in its outbox and sends them
  again later);
* so does `Store.check_space`, which the node asks before the membership
  changes that can wait (adds, promotions, more history, an epoch no
  departure asks for: accounts are free, and 400 of them rotating epochs
  wrote past the reserve at 12 MiB/s); departures and the epoch after one
  still go through down to a quarter of the reserve (a member must stay
  able to remove someone and rotate the key: bounded by the members rooms
  already have, but a room of 500 is about 64 MiB of epochs as its members
  leave one by one), and a `leave` (one op, no key, about 220 bytes) down
  to a sixteenth: under that the chat writes nothing (leaves too are
  bounded only by the memberships stored, which free accounts can make by
  the hundred thousand);
* reads never depend on it;
* it takes new content again once the free space is back above `min_free`
  plus a margin (`resume_at`), so that a disk hovering at the line does not
  flap between the two.

How: `Reserve` is the rule (no I/O: the caller gives the free bytes and the
time). `DiskReserve` measures with `os.statvfs` (the space an unprivileged
process may use, `f_bavail`), at most once per `REFRESH_S` when asked by a
write, and whenever `measure` is called (the node's watch does every
second, for its gauges and events).

What it must never do: refuse a read; refuse a departure, or the key after
one, above its floor; touch the store's file; block for long (one
`statvfs` of a local directory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from curvechat.store.base import StoreFull

__all__ = [
    "DEFAULT_MIN_FREE",
    "MAX_RESERVE_MB",
    "MIB",
    "PARTS",
    "REFRESH_S",
    "DiskReserve",
    "Need",
    "Reserve",
    "fmt_mib",
    "free_bytes",
]

MIB = 1024 * 1024
MAX_RESERVE_MB = 1024 * 1024
"""The most `--disk-reserve-mb` takes (1 TiB)."""
DEFAULT_MIN_FREE = 256 * MIB
"""What a node keeps free on its store's disk unless told otherwise."""

RESUME_MARGIN = 64 * MIB
"""Free space above `min_free` (or a quarter of it, if less) before new
content is taken again."""

REFRESH_S = 1.0
"""A write measures the disk again at most this often."""


Need = Literal["content", "departure", "leave"]
"""What a write is for: new content (messages, users, rooms, adds,
promotions, more history, an epoch no departure asks for), a departure (a
removal and its epoch, the epoch after a leave), a leave (one op, no key)."""

PARTS: dict[Need, tuple[int, str, str]] = {
    "content": (1, "the", "new messages, users and rooms wait"),
    "departure": (4, "a quarter of the", "only leaving a room goes on"),
    "leave": (16, "a sixteenth of the", "nothing is written"),
}
"""Each need's floor, as a part of the reserve (said), and what goes on under it."""


def fmt_mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


class Reserve:
    """The rule: low below `min_free` bytes free, and low until the free
    space is back at `resume_at` (sans-IO). `min_free` 0 turns it off."""

    def __init__(self, min_free: int) -> None:
        if min_free < 0:
            raise ValueError("the disk reserve must not be negative")
        self.min_free = min_free
        self.resume_at = min_free + min(RESUME_MARGIN, max(min_free // 4, 1)) if min_free else 0
        self.low = False
        self.free: int | None = None  # the last measure

    def observe(self, free: int) -> bool:
        """Take a measure; True if `low` changed."""
        self.free = free
        was = self.low
        if not self.min_free:
            self.low = False
        elif self.low:
            self.low = free < self.resume_at
        else:
            self.low = free < self.min_free
        return self.low != was

    def refusal(self, need: Need = "content") -> StoreFull | None:
        """What a write is refused with now, or None: new content under the
        reserve; a departure (a removal and its epoch, the epoch after a
        leave) under a quarter of it; a leave under a sixteenth."""
        if not self.low:
            return None
        part, under, left = PARTS[need]
        if (self.free or 0) >= self.min_free // part:
            return None
        return StoreFull(
            f"the server's disk has {fmt_mib(self.free or 0)} free, under {under}"
            f" {fmt_mib(self.min_free)} it keeps: {left} until its operator frees space"
        )


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on `path`'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskReserve:
    """`Reserve` on the filesystem of a directory (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        min_free: int = DEFAULT_MIN_FREE,
        *,
        measure: Callable[[Path], int] = free_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.rule = Reserve(min_free)
        self._measure = measure
        self._clock = clock
        self._at = -REFRESH_S

    def measure(self) -> bool:
        """Measure now; True if the reserve went low or came back. A disk
        that cannot be measured (the directory gone) changes nothing: the
        store's own writes will say what is wrong."""
        self._at = self._clock()
        try:
            free = self._measure(self.directory)
        except OSError:
            return False
        return self.rule.observe(free)

    def check(self, need: Need = "content") -> None:
        """Raise `StoreFull` if the write must wait (`Reserve.refusal`;
        measured at most once per `REFRESH_S`)."""
        if not self.rule.min_free:
            return
        if self._clock() - self._at >= REFRESH_S:
            self.measure()
        refused = self.rule.refusal(need)
        if refused is not None:
            raise refused
