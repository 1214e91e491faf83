"""The client's local cache: rooms, verified membership logs, epoch keys,
decrypted messages, the per-room cursor, the outbox and the trust pins, in
one SQLite file in the user's home.

Message texts, the envelopes of messages that did not open and epoch keys
are sealed (XSalsa20-Poly1305) under a key derived from the identity, so the
file alone reveals room names, senders and times but not what was said. The
outbox is written with synchronous=FULL: a message the user sent is never
lost by a crash of the client.

Plain synchronous sqlite3: every call is a few indexed rows and runs in well
under a millisecond, so it is called straight from the event loop; the
write-ahead log is copied into the database file (a checkpoint, which waits
for the disk) on a thread of its own (`checkpoint.py`). Messages
are written a page or a burst per transaction (`batch`, `messagerows.py`);
the rows that did not open are picked for another try by `unopenedrows.py`.
It must never hold a transaction open across an await, nor decide what a
message says: what is stored is what the trust core decided.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret

from curvechat.client.checkpoint import INTERVAL, RESTART_FRAMES, Checkpointer
from curvechat.client.errors import ClientError
from curvechat.client.messagerows import MIGRATIONS as MESSAGE_MIGRATIONS
from curvechat.client.messagerows import SCHEMA as MESSAGE_SCHEMA
from curvechat.client.messagerows import MessageBatch, MessageRows, Tx
from curvechat.client.model import CachedMessage, CachedRoom, OutboxItem
from curvechat.client.outboxrows import SCHEMA as OUTBOX_SCHEMA
from curvechat.client.outboxrows import OutboxRows
from curvechat.client.trust.rules import EpochRecord
from curvechat.client.trustrows import MIGRATIONS as TRUST_MIGRATIONS
from curvechat.client.trustrows import SCHEMA as TRUST_SCHEMA
from curvechat.client.trustrows import TrustRows, migrate
from curvechat.client.unopenedrows import INDEXES as MESSAGE_INDEXES
from curvechat.client.unopenedrows import UnopenedRows
from curvechat.client.withheldrows import SCHEMA as WITHHELD_SCHEMA
from curvechat.client.withheldrows import WithheldRows

__all__ = [
    "Cache",
    "CacheError",
    "CachedMessage",
    "CachedRoom",
    "MessageBatch",
    "OutboxItem",
    "cache_key",
]

SCHEMA_VERSION = 3
"""2: who gave us each epoch key, verified pins; 3: the envelopes of
messages that did not open, and the rule that refused each. An older cache
is brought up to date in place (`migrate`); a newer one is refused."""

log = logging.getLogger("curvechat.client")
_KEY_CHECK = "cache key check"
_NONCE = nacl.secret.SecretBox.NONCE_SIZE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL DEFAULT 0,
    head INTEGER NOT NULL DEFAULT 0,
    left INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0
);
"""


def cache_busy(exc: sqlite3.Error) -> bool:
    """`exc` says another connection (another process of this home) holds
    the cache past SQLite's wait: it passes by itself, unlike a full disk."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


CACHE_TRIES = 3
"""Steps in a row refused by a cache that is not held: the user is told."""


class CacheRefusals:
    """Counts the steps in a row (an outbox pass, a burst of pushes, a sync)
    that the local cache refused for a reason of its own, a full disk or an
    I/O error, and has the CACHE_TRIES-th told, once for the run (`tell`).
    A cache held by another process of this home passes by itself: neither
    counted nor told. `passed` ends a run."""

    def __init__(self, tell: Callable[[sqlite3.Error], None]) -> None:
        self._tell = tell
        self._run = 0

    def refused(self, exc: sqlite3.Error) -> None:
        if cache_busy(exc):
            return
        self._run += 1
        if self._run == CACHE_TRIES:
            self._tell(exc)

    def passed(self) -> None:
        self._run = 0


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


class Cache(MessageRows, UnopenedRows, WithheldRows, TrustRows, OutboxRows):
    def __init__(
        self,
        path: Path,
        key: bytes,
        *,
        checkpoint_every: float = INTERVAL,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        if len(key) != nacl.secret.SecretBox.KEY_SIZE:
            raise ValueError("the cache key must be 32 bytes")
        self._key = key
        self._damaged: set[str] = set()  # kinds of rows found not to open, told once
        self._epoch_keys: dict[str, dict[int, EpochRecord]] = {}
        """Opened epoch keys per room (read on every message, written rarely)."""
        self._unsorted: set[str] = set()
        """Rooms whose `_epoch_keys` took an older key: sorted when next read."""
        self._epoch_keys_at = -1
        """`written_elsewhere()` when `_epoch_keys` was last known to be current:
        another process of this home may have stored keys since."""
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open the local cache {path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Received messages can always be fetched again from the server, so
            # their commits need not wait for the disk; the outbox does (enqueue).
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (and their fsyncs) run on a thread of their own
            # (`checkpoint.py`); a log restarted is cut back to 64 MiB.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(f"PRAGMA journal_size_limit={64 << 20}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CacheError(f"{path} was written by a newer curvechat (schema {version})")
            self._db.executescript(
                _SCHEMA + MESSAGE_SCHEMA + WITHHELD_SCHEMA + OUTBOX_SCHEMA + TRUST_SCHEMA
            )
            migrate(self._db, TRUST_MIGRATIONS + MESSAGE_MIGRATIONS)
            self._db.executescript(MESSAGE_INDEXES)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._check_key(path)
            self.checkpointer = Checkpointer(path, checkpoint_every, restart_frames)
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise CacheError(f"cannot open the local cache {path}: {exc}") from exc
            raise

    def close(self) -> None:
        self.checkpointer.close()
        self._db.close()

    # --- sealing -------------------------------------------------------------
    # SecretBox's layout (the nonce, then the box), through the bindings:
    # the same libsodium calls without SecretBox's wrappers (a tenth of
    # what queueing a message costs).
    def _seal(self, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + nacl.bindings.crypto_secretbox_easy(data, nonce, self._key)

    def _open(self, data: bytes) -> bytes:
        return nacl.bindings.crypto_secretbox_open_easy(data[_NONCE:], data[:_NONCE], self._key)

    def _check_key(self, path: Path) -> None:
        """A file sealed under another key (another identity's cache copied
        here) is refused at once, rather than every row found damaged."""
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (_KEY_CHECK,)).fetchone()
        if row is None:
            self.set_meta(_KEY_CHECK, self._seal(_KEY_CHECK.encode()).hex())
            return
        try:
            ok = self._open(bytes.fromhex(str(row[0]))) == _KEY_CHECK.encode()
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            ok = False
        if not ok:
            raise CacheError(
                f"{path} was not written by this identity (another user's, or damaged):"
                " move it away, and a new one is made and filled from the server"
            )

    def _open_or_none(self, data: bytes, what: str) -> bytes | None:
        """`data` opened, or None if it does not (the file was damaged, or
        the row was written under another key): such a row is left out or
        shown as damaged, and the rest of the cache stays usable. Said in the
        log once per kind of row."""
        try:
            return self._open(data)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            if what not in self._damaged:
                self._damaged.add(what)
                log.warning("the local cache holds %s that does not open (damaged)", what)
            return None

    def written_elsewhere(self) -> int:
        """A count that changes whenever another connection (another process
        of this home) commits to the cache (SQLite's `data_version`)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

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

    # --- helpers -----------------------------------------------------------------------------
    def _tx(self) -> Tx:
        return Tx(self._db, self._restart_log)

    def _restart_log(self) -> None:
        self.checkpointer.restart_if_due(self._db)
