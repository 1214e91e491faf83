"""The client's local cache: rooms, verified membership logs, epoch keys,
decrypted messages, the per-room cursor, the outbox and the trust pins, in
one SQLite file in the user's home.

Message texts and epoch keys are sealed (XSalsa20-Poly1305) under a key
derived from the identity, so the file alone reveals room names, senders and
times but not what was said. The outbox is written with synchronous=FULL: a
message the user sent is never lost by a crash of the client.

Plain synchronous sqlite3: every call is a few indexed rows and runs in well
under a millisecond, so it is called straight from the event loop. Messages
are written a page or a burst per transaction (`batch`). It must never hold a
transaction open across an await, nor decide what a message says: what is
stored is what the trust core decided.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.hash
import nacl.secret
import nacl.utils

from curvechat.client.errors import ClientError
from curvechat.client.model import CachedMessage, CachedRoom, OutboxItem
from curvechat.client.outboxrows import SCHEMA as OUTBOX_SCHEMA
from curvechat.client.outboxrows import OutboxRows
from curvechat.client.trust.rules import EpochRecord
from curvechat.client.trustrows import SCHEMA as TRUST_SCHEMA
from curvechat.client.trustrows import TrustRows, migrate

__all__ = [
    "Cache",
    "CacheError",
    "CachedMessage",
    "CachedRoom",
    "MessageBatch",
    "OutboxItem",
    "cache_key",
]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL DEFAULT 0,
    head INTEGER NOT NULL DEFAULT 0,
    left INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL, txn TEXT NOT NULL, sent_ms INTEGER,
    sealed BLOB, error TEXT, epoch INTEGER,
    PRIMARY KEY (room, seq)
);
CREATE INDEX IF NOT EXISTS messages_txn ON messages (room, sender, txn);
CREATE INDEX IF NOT EXISTS messages_epoch ON messages (room, epoch);
"""


class CacheError(ClientError):
    code = "bad_cache"


def cache_key(identity_seed: bytes) -> bytes:
    """The key that seals the cache's secrets, derived from the identity seed."""
    return nacl.hash.blake2b(
        b"curvechat local cache v1",
        key=identity_seed,
        digest_size=32,
        encoder=nacl.encoding.RawEncoder,
    )


class Cache(TrustRows, OutboxRows):
    def __init__(self, path: Path, key: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._box = nacl.secret.SecretBox(key)
        self._epoch_keys: dict[str, dict[int, EpochRecord]] = {}
        """Opened epoch keys per room (read on every message, written rarely)."""
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Received messages can always be fetched again from the server, so
            # their commits need not wait for the disk; the outbox does (enqueue).
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CacheError(f"{path} was written by a newer curvechat (schema {version})")
            self._db.executescript(_SCHEMA + OUTBOX_SCHEMA + TRUST_SCHEMA)
            migrate(self._db)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cannot open the local cache {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # --- sealing -------------------------------------------------------------
    def _seal(self, data: bytes) -> bytes:
        return bytes(self._box.encrypt(data))

    def _open(self, data: bytes) -> bytes:
        return bytes(self._box.decrypt(data))

    # --- meta ------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (key, value))

    # --- rooms -------------------------------------------------------------------
    def ensure_room(self, room: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO rooms (room) VALUES (?)", (room,))

    def rooms(self, *, include_left: bool = False) -> list[CachedRoom]:
        rows = self._db.execute(
            "SELECT room, cursor, head, left, unread FROM rooms ORDER BY room"
        ).fetchall()
        return [
            CachedRoom(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows if include_left or not r[3]
        ]

    def room(self, room: str) -> CachedRoom | None:
        r = self._db.execute(
            "SELECT room, cursor, head, left, unread FROM rooms WHERE room=?", (room,)
        ).fetchone()
        return None if r is None else CachedRoom(r[0], r[1], r[2], bool(r[3]), r[4])

    def set_left(self, room: str, left: bool) -> None:
        self.ensure_room(room)
        self._db.execute("UPDATE rooms SET left=? WHERE room=?", (int(left), room))

    def set_head(self, room: str, head: int) -> None:
        self._db.execute("UPDATE rooms SET head=MAX(head, ?) WHERE room=?", (head, room))

    def clear_unread(self, room: str) -> None:
        self._db.execute("UPDATE rooms SET unread=0 WHERE room=?", (room,))

    # --- messages -------------------------------------------------------------------
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

    def holders(self, room: str, seqs: Sequence[int]) -> dict[int, tuple[str, str]]:
        """The (sender, txn) stored at each of `seqs` that holds a message of
        `room`, ("", "") for a row that did not verify (it names a sender and
        txn it may not have): whatever the seqs' spread, no range is scanned."""
        sql = "SELECT seq, sender, txn, error FROM messages WHERE room=? AND seq IN ({})"
        return {
            int(seq): ("", "") if error is not None else (who, txn)
            for seq, who, txn, error in self._rows_in(sql, (room,), seqs)
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
        """After `added` were stored: the room's head, unread count and cursor
        (moved over every contiguous stored seq)."""
        self._db.execute(
            "UPDATE rooms SET head=MAX(head, ?), unread=unread+? WHERE room=?",
            (max(added), unread, room),
        )
        row = self._db.execute("SELECT cursor FROM rooms WHERE room=?", (room,)).fetchone()
        if row is None:
            return
        start = cursor = int(row[0])
        fresh = set(added)
        while (
            cursor + 1 in fresh
            or self._db.execute(
                "SELECT 1 FROM messages WHERE room=? AND seq=?", (room, cursor + 1)
            ).fetchone()
        ):
            cursor += 1
        if cursor != start:
            self._db.execute("UPDATE rooms SET cursor=? WHERE room=?", (cursor, room))

    def has_message(self, room: str, seq: int) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM messages WHERE room=? AND seq=?", (room, seq)
            ).fetchone()
            is not None
        )

    def mark_replay(self, room: str, seq: int, original: int) -> None:
        """Turn a stored message into a replay marker of `original`."""
        self._db.execute(
            "UPDATE messages SET sealed=NULL, error=? WHERE room=? AND seq=?",
            (f"replay of message {original}", room, seq),
        )

    def seen_txn(self, room: str, sender: str, txn: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM messages WHERE room=? AND sender=? AND txn=? AND error IS NULL",
            (room, sender, txn),
        ).fetchone()
        return None if row is None else int(row[0])

    def messages(
        self, room: str, *, limit: int = 100, before: int | None = None, after: int | None = None
    ) -> list[CachedMessage]:
        sql = (
            "SELECT room, seq, ts_ms, sender, txn, sent_ms, sealed, error"
            " FROM messages WHERE room=?"
        )
        args: list[object] = [room]
        if after is not None:
            rows = self._db.execute(sql + " AND seq>? ORDER BY seq LIMIT ?", (*args, after, limit))
        else:
            if before is not None:
                sql += " AND seq<?"
                args.append(before)
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))
        out = [
            CachedMessage(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                None if r[6] is None else self._open(r[6]).decode(),
                r[7],
            )
            for r in rows
        ]
        return sorted(out, key=lambda msg: msg.seq)

    # --- helpers -----------------------------------------------------------------------------
    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    """One transaction; inside another one (a batch) it joins that one."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._own = False

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._own = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._own:
            self._own = False
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


_IN_CHUNK = 500  # values per IN (...) list

_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages (room, seq, ts_ms, sender, txn, sent_ms, sealed,"
    " error, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class MessageBatch:
    """Messages of one room added in one transaction; the room's head, unread
    count and cursor are updated once, at the end. Never held across an
    await: the transaction would take in whatever else ran meanwhile."""

    def __init__(self, cache: Cache, room: str) -> None:
        self._cache = cache
        self.room = room
        self.added: list[int] = []
        self._unread = 0
        self._tx = _Tx(cache._db)

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
    ) -> bool:
        """Store one message (once per seq); False if it was already there."""
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
                (self.room, s, ts, who, txn, sent, sealed, None, e)
                for s, ts, who, txn, sent, sealed, e in rows
            ],
        )
        self.added.extend(r[0] for r in rows)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self.added:
                self._cache._advance(self.room, self.added, self._unread)
        except BaseException:
            self._tx.__exit__(RuntimeError, None, None)
            raise
        self._tx.__exit__(exc_type, exc, tb)
