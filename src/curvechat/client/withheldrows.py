"""The cache's record of seqs the server did not hand out when asked for
them (`withheld.py` decides which, and how many a room may hold): disjoint
ranges of seqs per room, which the room's cursor moves over as over stored
rows (`messagerows.py`), and which are asked for again at each sync after
connecting. A row stored at such a seq later (asked again, pushed, a page
of older history, another process of this home) takes it out of the
record: `MessageRows._advance` says which seqs it stored.

A mixin of `Cache`. It must never decide that a seq was withheld, nor let
two ranges of a room overlap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence

from curvechat.client.messagerows import Tx

SCHEMA = """
CREATE TABLE IF NOT EXISTS withheld (
    room TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (room, lo)
);
"""

Range = tuple[int, int]


def without(ranges: Iterable[Range], taken: Iterable[int | Range]) -> list[Range]:
    """`ranges` less the seqs and ranges in `taken`, in seq order."""
    cuts = sorted((t, t) if isinstance(t, int) else t for t in taken)
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        start = lo
        for c_lo, c_hi in cuts:
            if c_hi < start or c_lo > hi:
                continue
            if c_lo > start:
                out.append((start, c_lo - 1))
            start = max(start, c_hi + 1)
        if start <= hi:
            out.append((start, hi))
    return out


class WithheldRows:
    _db: sqlite3.Connection
    _tx: Callable[[], Tx]
    _walk: Callable[[str, set[int]], None]

    def add_withheld(self, room: str, ranges: Sequence[Range]) -> None:
        """Record `ranges` of `room` as withheld (less what is recorded
        already), and move the room's cursor over them where it stands just
        below one."""
        if not ranges:
            return
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        with self._tx():
            fresh = without(ranges, self._ranges_within(room, lo, hi))
            self._db.executemany(
                "INSERT INTO withheld (room, lo, hi) VALUES (?, ?, ?)",
                [(room, a, b) for a, b in fresh],
            )
            self._walk(room, set())

    def withheld(self, room: str, limit: int) -> list[Range]:
        """The lowest `limit` ranges of `room` recorded as withheld."""
        rows = self._db.execute(
            "SELECT lo, hi FROM withheld WHERE room=? ORDER BY lo LIMIT ?", (room, limit)
        )
        return [(int(lo), int(hi)) for lo, hi in rows]

    def withheld_count(self, room: str) -> int:
        """How many seqs of `room` are recorded as withheld."""
        row = self._db.execute(
            "SELECT ifnull(sum(hi - lo + 1), 0) FROM withheld WHERE room=?", (room,)
        ).fetchone()
        return int(row[0])

    def withheld_after(self, room: str, lo: int, limit: int) -> list[tuple[str, int, int]]:
        """Up to `limit` ranges of any room after (`room`, `lo`), in (room,
        seq) order: asked for again a budget at a time, in turn."""
        rows = self._db.execute(
            "SELECT room, lo, hi FROM withheld WHERE (room, lo) > (?, ?) ORDER BY room, lo LIMIT ?",
            (room, lo, limit),
        )
        return [(str(r), int(a), int(b)) for r, a, b in rows]

    def _stored_at(self, room: str, seqs: Sequence[int]) -> None:
        """Rows of `room` were just stored at `seqs`: they leave the ranges
        they were in (two index lookups when none was)."""
        hit = self._ranges_within(room, min(seqs), max(seqs))
        if not hit:
            return
        self._db.executemany(
            "DELETE FROM withheld WHERE room=? AND lo=?", [(room, lo) for lo, _ in hit]
        )
        self._db.executemany(
            "INSERT INTO withheld (room, lo, hi) VALUES (?, ?, ?)",
            [(room, a, b) for a, b in without(hit, seqs)],
        )

    def _ranges_within(self, room: str, lo: int, hi: int) -> list[Range]:
        """The ranges of `room` that share a seq with lo..hi: the one that
        holds `lo`, if any, and those that start after it, up to `hi` (the
        ranges are disjoint)."""
        below = self._db.execute(
            "SELECT lo, hi FROM withheld WHERE room=? AND lo <= ? ORDER BY lo DESC LIMIT 1",
            (room, lo),
        ).fetchone()
        rows = self._db.execute(
            "SELECT lo, hi FROM withheld WHERE room=? AND lo > ? AND lo <= ? ORDER BY lo",
            (room, lo, hi),
        ).fetchall()
        if below is not None and below[1] >= lo:
            rows.insert(0, below)
        return [(int(a), int(b)) for a, b in rows]
