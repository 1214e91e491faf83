"""The cache's rows that the trust core reads and writes: verified membership
ops, epoch keys (sealed) with who gave them to us, identity pins with their
verified flag, and pending key changes.

A mixin of `Cache`: it shares the cache's connection and sealing key. The
trust core sees these methods only through its `TrustStore` protocol.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from curvechat.client.model import Pin
from curvechat.client.trust.rules import EpochRecord
from curvechat.crypto.errors import MembershipError
from curvechat.protocol import ErrorCode

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    room TEXT NOT NULL, idx INTEGER NOT NULL, op BLOB NOT NULL, sig BLOB NOT NULL,
    PRIMARY KEY (room, idx)
);
CREATE TABLE IF NOT EXISTS epoch_keys (
    room TEXT NOT NULL, epoch INTEGER NOT NULL, after_op INTEGER NOT NULL,
    sealed BLOB NOT NULL, stored_ms INTEGER NOT NULL, sender TEXT,
    PRIMARY KEY (room, epoch)
);
CREATE TABLE IF NOT EXISTS epoch_alternates (
    room TEXT NOT NULL, epoch INTEGER NOT NULL, sender TEXT NOT NULL, after_op INTEGER NOT NULL,
    sealed BLOB NOT NULL, PRIMARY KEY (room, epoch, sender)
);
CREATE TABLE IF NOT EXISTS pins (
    user TEXT PRIMARY KEY, sign_pub BLOB NOT NULL, first_seen_ms INTEGER NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS epoch_shared (
    room TEXT NOT NULL, epoch INTEGER NOT NULL, user TEXT NOT NULL,
    PRIMARY KEY (room, epoch, user)
);
CREATE TABLE IF NOT EXISTS key_changes (
    user TEXT PRIMARY KEY, offered BLOB NOT NULL, seen_ms INTEGER NOT NULL
);
"""

MIGRATIONS = (
    # schema 1 -> 2: who gave us each epoch key; pins the user verified
    ("epoch_keys", "sender", "ALTER TABLE epoch_keys ADD COLUMN sender TEXT"),
    ("pins", "verified", "ALTER TABLE pins ADD COLUMN verified INTEGER NOT NULL DEFAULT 0"),
)


def migrate(db: sqlite3.Connection, steps: Sequence[tuple[str, str, str]] = MIGRATIONS) -> None:
    """Add to an older cache the columns `steps` name, as (table, column,
    statements), where they are missing: each step's statements in one
    transaction."""
    for table, column, sql in steps:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            db.executescript(f"BEGIN; {sql}; COMMIT;")


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrustRows:
    _db: sqlite3.Connection
    _seal: Callable[[bytes], bytes]
    _open: Callable[[bytes], bytes]
    _open_or_none: Callable[[bytes, str], bytes | None]
    _epoch_keys: dict[str, dict[int, EpochRecord]]
    _epoch_keys_at: int
    _unsorted: set[str]
    _tx: Callable[[], Any]
    written_elsewhere: Callable[[], int]

    # --- membership log ---------------------------------------------------------
    def ops(self, room: str, after: int = -1) -> list[tuple[bytes, bytes]]:
        """The room's ops past index `after`, in order, as (op, sig)."""
        return [
            (bytes(r[0]), bytes(r[1]))
            for r in self._db.execute(
                "SELECT op, sig FROM ops WHERE room=? AND idx>? ORDER BY idx", (room, after)
            )
        ]

    def op_at(self, room: str, index: int) -> tuple[bytes, bytes] | None:
        row = self._db.execute(
            "SELECT op, sig FROM ops WHERE room=? AND idx=?", (room, index)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def add_ops(self, room: str, ops: list[tuple[int, bytes, bytes]]) -> None:
        """Store verified ops. An index held already keeps its op; if the op
        held there differs (another process of this home stored another one),
        nothing is stored and MembershipError (conflict) is raised."""
        with self._tx():
            for i, op, sig in ops:
                held = self.op_at(room, i)
                if held is not None and held != (op, sig):
                    raise MembershipError(
                        ErrorCode.CONFLICT, f"op {i} differs from the one this home holds"
                    )
            self._db.executemany(
                "INSERT OR IGNORE INTO ops (room, idx, op, sig) VALUES (?, ?, ?, ?)",
                [(room, i, op, sig) for i, op, sig in ops],
            )

    def drop_ops(self, room: str) -> None:
        self._db.execute("DELETE FROM ops WHERE room=?", (room,))

    # --- epoch keys ---------------------------------------------------------------
    def put_epoch_key(
        self,
        room: str,
        epoch: int,
        after_op: int,
        key: bytes,
        sender: str | None,
        *,
        replace: bool = False,
    ) -> None:
        """File the key of `epoch`; one held for it stays, unless `replace`
        (an epoch we made, whose number a planted key had taken)."""
        verb = "REPLACE" if replace else "IGNORE"
        cur = self._db.execute(
            f"INSERT OR {verb} INTO epoch_keys (room, epoch, after_op, sealed, stored_ms, sender)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (room, epoch, after_op, self._seal(key), _now_ms(), sender),
        )
        cached = self._epoch_keys.get(room)
        if cached is None or cur.rowcount == 0:
            return  # read when next asked for; or an epoch already held, kept as it was
        if self._db.in_transaction:
            # It may yet be rolled back: read them again when next asked for.
            del self._epoch_keys[room]
            return
        # Committed: one more key, not every key of the room read and opened again.
        if cached and epoch < next(reversed(cached)):
            self._unsorted.add(room)  # history shared late: sorted when next read
        cached[epoch] = EpochRecord(epoch=epoch, after_op=after_op, key=key, sender=sender)

    def put_alternate(self, room: str, epoch: int, after_op: int, key: bytes, sender: str) -> bool:
        """Keep another key than the one held for `epoch` (the held one stays
        the epoch's, K7; this one opens what was sealed under it), one for
        each member who gave one; whether it was new."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO epoch_alternates (room, epoch, sender, after_op, sealed)"
            " VALUES (?, ?, ?, ?, ?)",
            (room, epoch, sender, after_op, self._seal(key)),
        )
        return cur.rowcount > 0

    def alternates(self, room: str, epoch: int) -> list[EpochRecord]:
        """The other keys kept for `epoch` of `room` (`put_alternate`)."""
        out = []
        for after_op, sealed, sender in self._db.execute(
            "SELECT after_op, sealed, sender FROM epoch_alternates WHERE room=? AND epoch=?",
            (room, epoch),
        ):
            key = self._open_or_none(sealed, "a room key")
            if key is not None:
                out.append(EpochRecord(epoch=epoch, after_op=after_op, key=key, sender=sender))
        return out

    def epoch_usage(self, room: str, epoch: int) -> tuple[int, int]:
        """(messages stored under `epoch`, when its key was stored, ms)."""
        row = self._db.execute(
            "SELECT stored_ms FROM epoch_keys WHERE room=? AND epoch=?", (room, epoch)
        ).fetchone()
        count = self._db.execute(
            "SELECT COUNT(*) FROM messages WHERE room=? AND epoch=?", (room, epoch)
        ).fetchone()[0]
        return int(count), int(row[0]) if row else 0

    def epoch_records(self, room: str) -> dict[int, EpochRecord]:
        version = self.written_elsewhere()
        if version != self._epoch_keys_at:  # another process of this home wrote
            self._epoch_keys.clear()
            self._epoch_keys_at = version
        cached = self._epoch_keys.get(room)
        if cached is not None and room in self._unsorted:  # the records are in epoch order
            cached = self._epoch_keys[room] = dict(sorted(cached.items()))
        self._unsorted.discard(room)
        if cached is None:
            cached = {}
            for r in self._db.execute(
                "SELECT epoch, after_op, sealed, sender FROM epoch_keys WHERE room=?"
                " ORDER BY epoch",
                (room,),
            ):
                key = self._open_or_none(r[2], "a room key")
                if key is not None:  # a damaged one is as if not held
                    cached[r[0]] = EpochRecord(epoch=r[0], after_op=r[1], key=key, sender=r[3])
            self._epoch_keys[room] = cached
        return dict(cached)

    def shared_with(self, room: str, epoch: int) -> frozenset[str]:
        """Users we boxed `epoch`'s key for when adding them to `room`."""
        return frozenset(
            r[0]
            for r in self._db.execute(
                "SELECT user FROM epoch_shared WHERE room=? AND epoch=?", (room, epoch)
            )
        )

    def record_shared(self, room: str, epochs: list[int], user: str) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO epoch_shared (room, epoch, user) VALUES (?, ?, ?)",
                [(room, e, user) for e in epochs],
            )

    def epoch_keys(self, room: str) -> dict[int, tuple[int, bytes]]:
        """epoch -> (after_op, key)"""
        return {e: (r.after_op, r.key) for e, r in self.epoch_records(room).items()}

    # --- pins ----------------------------------------------------------------------------
    def pin(self, user: str) -> bytes | None:
        row = self._db.execute("SELECT sign_pub FROM pins WHERE user=?", (user,)).fetchone()
        return None if row is None else bytes(row[0])

    def pin_record(self, user: str) -> Pin | None:
        row = self._db.execute(
            "SELECT user, sign_pub, verified, first_seen_ms FROM pins WHERE user=?", (user,)
        ).fetchone()
        return None if row is None else Pin(row[0], bytes(row[1]), bool(row[2]), row[3])

    def set_pin(self, user: str, sign_pub: bytes, *, verified: bool = False) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO pins (user, sign_pub, first_seen_ms, verified)"
            " VALUES (?, ?, ?, ?)",
            (user, sign_pub, _now_ms(), int(verified)),
        )

    def set_verified(self, user: str, verified: bool) -> None:
        self._db.execute("UPDATE pins SET verified=? WHERE user=?", (int(verified), user))

    def record_key_change(self, user: str, offered: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO key_changes (user, offered, seen_ms) VALUES (?, ?, ?)",
            (user, offered, _now_ms()),
        )

    def key_changes(self) -> dict[str, bytes]:
        """Users whose key differs from the pin, with the key now offered."""
        return {
            r[0]: bytes(r[1]) for r in self._db.execute("SELECT user, offered FROM key_changes")
        }

    def drop_key_change(self, user: str) -> None:
        self._db.execute("DELETE FROM key_changes WHERE user=?", (user,))

    def accept_key_change(self, user: str, key: bytes) -> bytes | None:
        """Pin `key` for `user` (not verified: accepting is not comparing) if
        it is the key offered now, read and written in one transaction.
        Returns the key offered now (None if no change is pending): `key`
        when it was pinned; another key when the offer changed since the
        user was shown `key`, and then nothing is pinned."""
        with self._tx():
            row = self._db.execute(
                "SELECT offered FROM key_changes WHERE user=?", (user,)
            ).fetchone()
            if row is None or bytes(row[0]) != key:
                return None if row is None else bytes(row[0])
            self._db.execute(
                "UPDATE pins SET sign_pub=?, first_seen_ms=?, verified=0 WHERE user=?",
                (key, _now_ms(), user),
            )
            self._db.execute("DELETE FROM key_changes WHERE user=?", (user,))
        return key

    def pins(self) -> dict[str, bytes]:
        return {r[0]: bytes(r[1]) for r in self._db.execute("SELECT user, sign_pub FROM pins")}
