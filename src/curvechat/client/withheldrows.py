"""The cache's record of seqs the server did not hand out when asked for
them (`withheld.py` decides which): ranges of seqs per room, which the
room's cursor moves over as over stored rows (`messagerows.py`), and which
are asked for again at each sync after connecting.

A mixin of `Cache`. It must never decide that a seq was withheld, nor hold
more than `MAX_RANGES` ranges of a room (the lowest are forgotten: the
cursor is past them already, they are only not asked for again).
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

MAX_RANGES = 1024
"""Ranges kept per room: what a server can make a client remember."""


class WithheldRows:
    _db: sqlite3.Connection
    _tx: Callable[[], Tx]
    _walk: Callable[[str, set[int]], None]

    def add_withheld(self, room: str, ranges: Sequence[tuple[int, int]]) -> None:
        """Record `ranges` (lo, hi) of `room` as withheld, and move the
        room's cursor over them where it stands just below one."""
        if not ranges:
            return
        with self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO withheld (room, lo, hi) VALUES (?, ?, ?)",
                [(room, lo, hi) for lo, hi in ranges],
            )
            self._db.execute(
                "DELETE FROM withheld WHERE room=? AND lo < ("
                " SELECT lo FROM withheld WHERE room=? ORDER BY lo DESC LIMIT 1 OFFSET ?)",
                (room, room, MAX_RANGES - 1),
            )
            self._walk(room, set())

    def withheld(self, room: str, limit: int) -> list[tuple[int, int]]:
        """The newest `limit` ranges of `room` recorded as withheld, lowest first."""
        rows = self._db.execute(
            "SELECT lo, hi FROM withheld WHERE room=? ORDER BY lo DESC LIMIT ?", (room, limit)
        ).fetchall()
        return [(int(lo), int(hi)) for lo, hi in reversed(rows)]

    def withheld_rooms(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT room FROM withheld ORDER BY room")]

    def served(self, room: str, lo: int, hi: int, seqs: Iterable[int]) -> None:
        """`seqs` of the range (lo, hi) of `room` came after all: what is
        left of the range stays recorded."""
        got = sorted({s for s in seqs if lo <= s <= hi})
        if not got:
            return
        rest, start = [], lo
        for s in got:
            if s > start:
                rest.append((room, start, s - 1))
            start = s + 1
        if start <= hi:
            rest.append((room, start, hi))
        with self._tx():
            self._db.execute("DELETE FROM withheld WHERE room=? AND lo=?", (room, lo))
            self._db.executemany("INSERT OR REPLACE INTO withheld VALUES (?, ?, ?)", rest)
