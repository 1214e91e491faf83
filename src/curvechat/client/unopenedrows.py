"""The cache's rows of messages that did not open, as passes pick them
(`recovery.py` decides, `recover.py` asks): each pick is an indexed search
with a bound, reading rows in the index's order (never a scan; the rows of
several epochs merged at most `limit` an epoch, never all of them sorted),
so a pass never reads every such row of a room, however many there are (a
member who joined late holds one for every message sent before, under keys
it never got; a server can make rows refused by the log cheaply).

A mixin of `Cache`, over the message rows of `messagerows.py`. It must
never decide which rows are tried, nor write a row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import nacl.exceptions

from curvechat.protocol import ProtocolError, decode_envelope
from curvechat.protocol import messages as m

WAITS = "(envelope IS NOT NULL AND ifnull(rule, '') IN ('M2', 'M3', 'M4'))"
"""A row that did not open whose kept envelope a key or an op may still
open: 1 or 0 (never NULL), the same text in the index and the queries."""

BY_KEY = "envelope IS NOT NULL AND rule = 'M2'"
"""A row waiting for a key: the same text in its index and its query (a
partial index serves only a query that says what it says)."""

BY_LOG = "envelope IS NOT NULL AND rule IN ('M3', 'M4')"
"""A row waiting for an op of the log: the same text in its index and its
query, which reads them in seq order (an index that puts the rule first
would give M3 then M4: every such row of the room sorted at each pick)."""

INDEXES = f"""
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (room, epoch, seq) WHERE {BY_KEY};
CREATE INDEX IF NOT EXISTS messages_by_log ON messages (room, seq) WHERE {BY_LOG};
CREATE INDEX IF NOT EXISTS messages_unopened ON messages (room, {WAITS}, seq)
    WHERE error IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_opened ON messages (room, seq, epoch) WHERE error IS NULL;
"""
"""Made after `MIGRATIONS` (they name the columns those add)."""


class UnopenedRows:
    _db: sqlite3.Connection
    _open: Callable[[bytes], bytes]
    _rows_in: Callable[..., Iterator[tuple[Any, ...]]]

    def waiting_for_keys(
        self, room: str, epochs: Sequence[int], limit: int
    ) -> dict[int, tuple[str, str | None]]:
        """The rows of `room` refused for want of a key (M2) under one of
        `epochs` that keep their envelope: seq -> (error, rule), the lowest
        seqs first, at most `limit`. The index gives each epoch's rows in
        seq order, so the search of each stops once its rows are past the
        `limit` lowest found so far: what it reads is bounded by `limit`
        an epoch, not by the rows waiting."""
        sql = (
            "SELECT seq, error, rule FROM messages INDEXED BY messages_by_key"
            f" WHERE room=? AND {BY_KEY} AND epoch IN ({{}}) AND error IS NOT NULL"
            f" ORDER BY seq LIMIT {max(int(limit), 0)}"
        )
        rows = sorted(self._rows_in(sql, (room,), epochs))[: max(limit, 0)]
        return {int(seq): (str(error), rule) for seq, error, rule in rows}

    def waiting_for_log(
        self, room: str, after: int, limit: int
    ) -> dict[int, tuple[str, str | None]]:
        """The rows of `room` past seq `after` refused by its log (M3, M4)
        that keep their envelope: seq -> (error, rule), in seq order, at
        most `limit`."""
        rows = self._db.execute(
            "SELECT seq, error, rule FROM messages INDEXED BY messages_by_log"
            f" WHERE room=? AND {BY_LOG} AND seq>? AND error IS NOT NULL ORDER BY seq LIMIT ?",
            (room, after, max(limit, 0)),
        )
        return {int(seq): (str(error), rule) for seq, error, rule in rows}

    def unopened(self, room: str, *, waits: bool, below: int | None, limit: int) -> list[int]:
        """Seqs of rows of `room` that did not open: those whose kept
        envelope a key or an op may still open (`waits`), or the others.
        In turn: from below seq `below` down, then from the newest down to
        `below` (None: from the newest down); at most `limit`."""
        sql = (
            f"SELECT seq FROM messages WHERE room=? AND error IS NOT NULL AND {WAITS}=?"
            " AND seq {} ? ORDER BY seq DESC LIMIT ?"
        )
        top = (1 << 63) - 1 if below is None else below
        out = [int(r[0]) for r in self._db.execute(sql.format("<"), (room, waits, top, limit))]
        if below is not None and len(out) < limit:
            more = self._db.execute(sql.format(">="), (room, waits, below, limit - len(out)))
            out += [int(r[0]) for r in more]
        return out

    def epochs_around(self, room: str, seq: int) -> tuple[int | None, int | None]:
        """The epochs of the nearest rows of `room` that opened before `seq`
        and after it (None: there is none)."""
        row = self._db.execute(
            "SELECT (SELECT epoch FROM messages WHERE room=?1 AND error IS NULL AND seq<?2"
            " AND epoch IS NOT NULL ORDER BY seq DESC LIMIT 1),"
            " (SELECT epoch FROM messages WHERE room=?1 AND error IS NULL AND seq>?2"
            " AND epoch IS NOT NULL ORDER BY seq LIMIT 1)",
            (room, seq),
        ).fetchone()
        return row[0], row[1]

    def kept_envelopes(self, room: str, seqs: Sequence[int]) -> dict[int, m.Envelope]:
        """The envelopes kept with the rows of `room` at `seqs` that did not
        open, in seq order (one that no longer decodes is left out: the
        caller drops it, `drop_envelopes`)."""
        sql = (
            "SELECT seq, envelope FROM messages WHERE room=? AND error IS NOT NULL"
            " AND envelope IS NOT NULL AND seq IN ({})"
        )
        out: dict[int, m.Envelope] = {}
        for seq, sealed in sorted(self._rows_in(sql, (room,), seqs)):
            try:
                out[int(seq)] = decode_envelope(self._open(sealed))
            except (ProtocolError, ValueError, nacl.exceptions.CryptoError):
                continue
        return out
