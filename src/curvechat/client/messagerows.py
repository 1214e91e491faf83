"""The cache's message rows: one per seq of each room, written a page or a
burst per transaction (`MessageBatch`), each text sealed at rest.

A message that did not open is a row with an error, the rule that refused
it (M1-M6) and no text; if a key or an op may still open it (M2-M4), the
envelope it came in is kept with it, sealed at rest like a text, so that
it can be opened again when what it needed arrives (`recovery.py`). Such a
row is not unread: it counts as unread when it opens. Such a row, and only
such a row, may later be rewritten (`MessageBatch.rewrite`); a row that
opened changes only to a replay marker (M6, `mark_replay`). Which such
rows a pass tries again is read by `unopenedrows.py`.

A mixin of `Cache`: it shares the cache's connection and sealing key. It
must never decide what a message says or whether a row is replaced: the
trust core and `recovery.py` decide, this stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from curvechat.client.model import CachedMessage
from curvechat.client.unopenedrows import WAITS
from curvechat.protocol import messages as m

DAMAGED = "damaged in the local cache"
"""The error of a message row whose text does not open (the file was damaged)."""

Held = Literal["opened", "waits", "never"]
"""How a row holds its seq: it opened; it did not, but a key or an op may
still open it (M2-M4); it did not and never will."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL, txn TEXT NOT NULL, sent_ms INTEGER,
    sealed BLOB, error TEXT, epoch INTEGER, envelope BLOB, rule TEXT,
    PRIMARY KEY (room, seq)
);
CREATE INDEX IF NOT EXISTS messages_txn ON messages (room, sender, txn);
CREATE INDEX IF NOT EXISTS messages_epoch ON messages (room, epoch);
"""

_RULE_FROM_ERROR = """
UPDATE messages SET rule = CASE
    WHEN error LIKE 'replay of message %' THEN 'M6'
    WHEN error LIKE 'failed to verify or decrypt%' THEN 'M5'
    WHEN error GLOB '*(M[1-6])' THEN substr(error, -3, 2)
END WHERE error IS NOT NULL
"""

MIGRATIONS = (
    # schema 2 -> 3: the envelope of a message that did not open, sealed,
    # and the rule that refused it (read back from the error of older rows)
    ("messages", "envelope", "ALTER TABLE messages ADD COLUMN envelope BLOB"),
    ("messages", "rule", f"ALTER TABLE messages ADD COLUMN rule TEXT; {_RULE_FROM_ERROR}"),
)

_IN_CHUNK = 500  # values per IN (...) list

_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages (room, seq, ts_ms, sender, txn, sent_ms, sealed,"
    " error, epoch, envelope, rule) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_SELECT_MESSAGES = "SELECT room, seq, ts_ms, sender, txn, sent_ms, sealed, error FROM messages"


class MessageRows:
    _db: sqlite3.Connection
    _seal: Callable[[bytes], bytes]
    _open: Callable[[bytes], bytes]
    _open_or_none: Callable[[bytes, str], bytes | None]
    _tx: Callable[[], Tx]
    _stored_at: Callable[[str, Sequence[int]], None]

    def put_message(
        self,
        room: str,
        seq: int,
        ts_ms: int,
        sender: str,
        txn: str,
        sent_ms: int | None,
        text: str | None,
        error: str | None,
        *,
        count_unread: bool = False,
        epoch: int | None = None,
    ) -> bool:
        """Store one message (once per seq); returns False if it was already there.
        Advances the room's cursor over every contiguous stored seq."""
        with self.batch(room) as batch:
            return batch.add(
                seq,
                ts_ms,
                sender,
                txn,
                sent_ms,
                text,
                error,
                count_unread=count_unread,
                epoch=epoch,
            )

    def batch(self, room: str) -> MessageBatch:
        """Messages of `room` written in one transaction (`with cache.batch(room) as b:
        b.add(...)`): a page or a burst costs one commit, not one per message.
        Queries made inside it (a replay check) see what it added so far."""
        return MessageBatch(self, room)

    def known_seqs(self, room: str, seqs: list[int]) -> set[int]:
        """Which of `seqs` are already stored for `room`."""
        return set(self.holders(room, seqs))

    def holders(self, room: str, seqs: Sequence[int]) -> dict[int, tuple[str, str, Held]]:
        """The (sender, txn, how it is held) stored at each of `seqs` that
        holds a message of `room`: a row that did not open only claims its
        sender and txn. Whatever the seqs' spread, no range is scanned."""
        sql = (
            f"SELECT seq, sender, txn, error, {WAITS} FROM messages WHERE room=? AND seq IN ({{}})"
        )
        return {
            int(seq): (who, txn, "opened" if error is None else "waits" if waits else "never")
            for seq, who, txn, error, waits in self._rows_in(sql, (room,), seqs)
        }

    def own_txns(self, room: str, sender: str, txns: Sequence[str]) -> set[str]:
        """Which of `txns` a message of `sender` stored in `room` carries
        (`seen_txn` for many)."""
        sql = "SELECT txn FROM messages WHERE room=? AND sender=? AND error IS NULL AND txn IN ({})"
        return {r[0] for r in self._rows_in(sql, (room, sender), txns)}

    def _rows_in(
        self, sql: str, args: tuple[object, ...], values: Sequence[object]
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql` with its `{}` an IN list of `values`, 500 at a time."""
        wanted = list(dict.fromkeys(values))
        for i in range(0, len(wanted), _IN_CHUNK):
            part = wanted[i : i + _IN_CHUNK]
            yield from self._db.execute(sql.format(", ".join("?" * len(part))), (*args, *part))

    def _advance(self, room: str, added: list[int], unread: int) -> None:
        """After `added` were stored: the room's head, unread count, the seqs
        recorded as withheld (`withheldrows.py`: the added leave them) and
        cursor (moved over every contiguous stored seq, and every range
        still recorded as withheld)."""
        self._db.execute(
            "UPDATE rooms SET head=MAX(head, ?), unread=unread+? WHERE room=?",
            (max(added), unread, room),
        )
        self._stored_at(room, added)
        self._walk(room, set(added))

    def _walk(self, room: str, fresh: set[int]) -> None:
        """Move the room's cursor over every contiguous seq stored (or in
        `fresh`, just stored) and every range recorded as withheld."""
        row = self._db.execute("SELECT cursor FROM rooms WHERE room=?", (room,)).fetchone()
        if row is None:
            return
        start = cursor = int(row[0])
        while True:
            if (
                cursor + 1 in fresh
                or self._db.execute(
                    "SELECT 1 FROM messages WHERE room=? AND seq=?", (room, cursor + 1)
                ).fetchone()
            ):
                cursor += 1
                continue
            hole = self._db.execute(  # seqs the server did not hand out (withheldrows.py)
                "SELECT hi FROM withheld WHERE room=? AND lo=?", (room, cursor + 1)
            ).fetchone()
            if hole is None:
                break
            cursor = max(cursor + 1, int(hole[0]))
        if cursor != start:
            self._db.execute("UPDATE rooms SET cursor=? WHERE room=?", (cursor, room))

    def has_message(self, room: str, seq: int) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM messages WHERE room=? AND seq=?", (room, seq)
            ).fetchone()
            is not None
        )

    def drop_envelopes(self, room: str, seqs: Sequence[int]) -> None:
        """Drop the envelope kept with the rows of `room` at `seqs` that did
        not open (their error and rule stay: they are asked for again by
        seq only)."""
        with self._tx():
            self._db.executemany(
                "UPDATE messages SET envelope=NULL WHERE room=? AND seq=? AND error IS NOT NULL",
                [(room, seq) for seq in seqs],
            )

    def mark_replay(self, room: str, seq: int, original: int) -> None:
        """Turn a stored message into a replay marker of `original`."""
        self._db.execute(
            "UPDATE messages SET sealed=NULL, envelope=NULL, error=?, rule='M6'"
            " WHERE room=? AND seq=?",
            (f"replay of message {original}", room, seq),
        )

    def seen_txn(self, room: str, sender: str, txn: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM messages WHERE room=? AND sender=? AND txn=? AND error IS NULL",
            (room, sender, txn),
        ).fetchone()
        return None if row is None else int(row[0])

    def messages_at(self, room: str, seqs: Sequence[int]) -> list[CachedMessage]:
        """The messages of `room` stored at `seqs`, in seq order."""
        sql = f"{_SELECT_MESSAGES} WHERE room=? AND seq IN ({{}})"
        return sorted(map(self._message, self._rows_in(sql, (room,), seqs)), key=lambda m: m.seq)

    def _message(self, r: tuple[Any, ...]) -> CachedMessage:
        if r[6] is None:
            return CachedMessage(r[0], r[1], r[2], r[3], r[4], r[5], None, r[7])
        opened = self._open_or_none(r[6], "a message")
        if opened is None:
            return CachedMessage(r[0], r[1], r[2], r[3], r[4], r[5], None, DAMAGED)
        return CachedMessage(r[0], r[1], r[2], r[3], r[4], r[5], opened.decode(), r[7])

    def messages(
        self, room: str, *, limit: int = 100, before: int | None = None, after: int | None = None
    ) -> list[CachedMessage]:
        sql = f"{_SELECT_MESSAGES} WHERE room=?"
        args: list[object] = [room]
        if after is not None:
            rows = self._db.execute(sql + " AND seq>? ORDER BY seq LIMIT ?", (*args, after, limit))
        else:
            if before is not None:
                sql += " AND seq<?"
                args.append(before)
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))
        return sorted(map(self._message, rows), key=lambda msg: msg.seq)


class Tx:
    """One transaction; inside another one (a batch) it joins that one.
    `before` runs first when it begins one (the cache's log restart)."""

    def __init__(self, db: sqlite3.Connection, before: Callable[[], None] | None = None) -> None:
        self._db = db
        self._before = before
        self._own = False

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            if self._before is not None:
                self._before()
            self._db.execute("BEGIN IMMEDIATE")
            self._own = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._own:
            self._own = False
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


class MessageBatch:
    """Messages of one room added (or rewritten) in one transaction; the
    room's head, unread count and cursor are updated once, at the end. Never
    held across an await: the transaction would take in whatever else ran
    meanwhile."""

    def __init__(self, cache: MessageRows, room: str) -> None:
        self._cache = cache
        self.room = room
        self.added: list[int] = []
        self._unread = 0
        self._tx = cache._tx()

    def __enter__(self) -> MessageBatch:
        self._tx.__enter__()
        return self

    def add(
        self,
        seq: int,
        ts_ms: int,
        sender: str,
        txn: str,
        sent_ms: int | None,
        text: str | None,
        error: str | None,
        *,
        count_unread: bool = False,
        epoch: int | None = None,
        envelope: bytes | None = None,
        rule: str | None = None,
    ) -> bool:
        """Store one message (once per seq); False if it was already there.
        `envelope` (the encoded envelope of a message that did not open) is
        kept sealed with its row, and `rule` (the rule that refused it)."""
        c = self._cache
        cur = c._db.execute(
            _INSERT_MESSAGE,
            (
                self.room,
                seq,
                ts_ms,
                sender,
                txn,
                sent_ms,
                None if text is None else c._seal(text.encode()),
                error,
                epoch,
                None if envelope is None or text is not None else c._seal(envelope),
                None if error is None else rule,
            ),
        )
        if cur.rowcount == 0:
            return False
        self.added.append(seq)
        self._unread += int(count_unread)
        return True

    def add_sealed(
        self, rows: Sequence[tuple[int, int, str, str, int | None, bytes, int | None]]
    ) -> None:
        """Store messages at seqs the caller found free, their text already
        sealed at rest, as (seq, ts, sender, txn, sent_ms, sealed text,
        epoch): one insert for all."""
        self._cache._db.executemany(
            _INSERT_MESSAGE,
            [
                (self.room, s, ts, who, txn, sent, sealed, None, e, None, None)
                for s, ts, who, txn, sent, sealed, e in rows
            ],
        )
        self.added.extend(r[0] for r in rows)

    def rewrite(
        self,
        seq: int,
        ts_ms: int | None,
        env: m.Envelope,
        *,
        sent_ms: int | None = None,
        text: str | None = None,
        error: str | None = None,
        rule: str | None = None,
        envelope: bytes | None = None,
        count_unread: bool = False,
    ) -> bool:
        """Rewrite the row at `seq` if it did not open (never another row):
        with `text` (the copy `env` opened; `count_unread`: one more unread
        message) or with `error`, the `rule` that refused the copy and the
        encoded envelope to keep (None: none); `ts_ms` None keeps the row's
        server time. False if `seq` holds no such row."""
        if (text is None) == (error is None):
            raise ValueError("a row holds a text or an error, not both nor neither")
        c = self._cache
        cur = c._db.execute(
            "UPDATE messages SET ts_ms=COALESCE(?, ts_ms), sender=?, txn=?, sent_ms=?,"
            " sealed=?, error=?, epoch=?, envelope=?, rule=?"
            " WHERE room=? AND seq=? AND error IS NOT NULL",
            (
                ts_ms,
                env.sender,
                env.txn,
                sent_ms,
                None if text is None else c._seal(text.encode()),
                error,
                env.epoch,
                None if envelope is None or text is not None else c._seal(envelope),
                None if error is None else rule,
                self.room,
                seq,
            ),
        )
        done = cur.rowcount == 1
        self._unread += int(done and text is not None and count_unread)
        return done

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self.added:
                self._cache._advance(self.room, self.added, self._unread)
            elif exc_type is None and self._unread:  # rows rewritten, none added
                self._cache._db.execute(
                    "UPDATE rooms SET unread=unread+? WHERE room=?", (self._unread, self.room)
                )
        except BaseException:
            self._tx.__exit__(RuntimeError, None, None)
            raise
        self._tx.__exit__(exc_type, exc, tb)
