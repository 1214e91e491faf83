"""The SQLite store's file: opening it, its settings, its schema and versions.

What it is for: `connect` turns a path into a connection the store can use
(the file and its directory private, WAL, ``synchronous=FULL``, foreign
keys on, the schema created, checked or brought up to date: a file of an
older version is migrated in the transaction that checks it). A file
written by a newer curvechat, or an SQLite file that is not a curvechat
store, is refused with StoreUnavailable before anything in it is changed.

What it must never do: run on the event loop's thread (it does file I/O:
the store calls it on its own thread); weaken ``synchronous=FULL`` or
journal in anything but WAL; change a file it refuses.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from curvechat.store.base import StoreUnavailable

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "connect", "transaction"]

#: Stored in ``PRAGMA user_version``. A file with a newer version is refused,
#: one with an older version migrated (`_MIGRATIONS`). 1: the first; 2: contacts.
SCHEMA_VERSION = 2
#: Stored in ``PRAGMA application_id`` ("cvch") to recognise our own files.
APPLICATION_ID = int.from_bytes(b"cvch", "big")

_T = TypeVar("_T")

# Version 2: one row a user who set contacts, the msgpack of ContactsRecord.
_CONTACTS = (
    """CREATE TABLE contacts (
        user TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID""",
)

#: The statements that bring a file of version N - 1 to version N.
_MIGRATIONS: dict[int, tuple[str, ...]] = {2: _CONTACTS}

#: The whole schema of a new file, at SCHEMA_VERSION.
_SCHEMA = (
    """CREATE TABLE users (
        user TEXT PRIMARY KEY,
        sign_pub BLOB NOT NULL,
        registered_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE transports (
        key BLOB PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(user)
    ) WITHOUT ROWID""",
    """CREATE TABLE rooms (
        room TEXT PRIMARY KEY,
        head INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        epoch_after_op INTEGER NOT NULL,
        op_head INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE ops (
        room TEXT NOT NULL REFERENCES rooms(room),
        idx INTEGER NOT NULL,
        op BLOB NOT NULL,
        sig BLOB NOT NULL,
        PRIMARY KEY (room, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE members (
        room TEXT NOT NULL REFERENCES rooms(room),
        user TEXT NOT NULL,
        admin INTEGER NOT NULL,
        PRIMARY KEY (room, user)
    ) WITHOUT ROWID""",
    "CREATE INDEX members_by_user ON members (user, room)",
    """CREATE TABLE epochs (
        room TEXT NOT NULL REFERENCES rooms(room),
        epoch INTEGER NOT NULL,
        after_op INTEGER NOT NULL,
        creator TEXT NOT NULL,
        PRIMARY KEY (room, epoch)
    ) WITHOUT ROWID""",
    """CREATE TABLE packets (
        room TEXT NOT NULL REFERENCES rooms(room),
        epoch INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        box BLOB NOT NULL,
        PRIMARY KEY (room, epoch, recipient)
    ) WITHOUT ROWID""",
    "CREATE INDEX packets_by_recipient ON packets (room, recipient, epoch)",
    """CREATE TABLE messages (
        room TEXT NOT NULL REFERENCES rooms(room),
        seq INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        sender TEXT NOT NULL,
        txn TEXT NOT NULL,
        envelope BLOB NOT NULL,
        PRIMARY KEY (room, seq),
        UNIQUE (room, sender, txn)
    )""",
    *_CONTACTS,
)


def transaction(conn: sqlite3.Connection, body: Callable[[], _T], *, write: bool = True) -> _T:
    """Run `body` in one transaction; roll back on any exception."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
    try:
        result = body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            # The original error is the one worth reporting.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def check_version(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the database has schema version {version}, newer than the {SCHEMA_VERSION} this"
            " curvechat supports: upgrade curvechat (the file was left unchanged)"
        )


def _migrate(conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    check_version(version)
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if version == 0:
        if (
            app_id not in (0, APPLICATION_ID)
            or conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
        ):
            raise StoreUnavailable("the file is an SQLite database but not a curvechat store")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    if app_id != APPLICATION_ID:
        raise StoreUnavailable("the file is an SQLite database but not a curvechat store")
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[step]:
            conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """Create the file (0600) and directory (0700), connect, set the PRAGMAs,
    create or check the schema. Raises StoreUnavailable, sqlite3.Error, OSError."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Refuse a newer file before anything (even the journal mode) is written.
        check_version(int(conn.execute("PRAGMA user_version").fetchone()[0]))
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise StoreUnavailable(f"cannot switch {path.name} to WAL (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
            raise StoreUnavailable("SQLite refused synchronous=FULL")
        if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            raise StoreUnavailable("SQLite refused foreign_keys=ON")
        transaction(conn, lambda: _migrate(conn))
    except BaseException:
        conn.close()
        raise
    return conn
