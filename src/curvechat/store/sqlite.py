"""The embedded SQLite backend of the store: one file, one thread, group commit.

What it is for: a single-server deployment keeps users, rooms, membership
logs, epochs, key packets and message envelopes in one SQLite file (WAL mode,
``synchronous=FULL``), so that every acknowledged write survives a crash or a
power cut.

How it works:

* Every sqlite3 call runs on ONE dedicated thread (a single-worker
  executor that owns the connection, created in `open`), awaited with
  ``loop.run_in_executor``. The event loop never blocks on disk I/O, and the
  calls are serialized in submission order.
* `append_messages` uses group commit: callers' batches are queued, and one
  committer task takes everything queued (up to ``batch_max`` messages, but
  always at least one whole caller batch) and commits it in ONE transaction
  (one fsync of the WAL), then resolves each caller with its results. The
  counters `SQLiteStore.commits` and `SQLiteStore.committed_messages` show
  how well that batches.
* Each caller's batch is all-or-nothing: rooms are checked per caller inside
  the shared transaction before anything of that caller is written, so one
  caller's unknown room fails only that caller (NoSuchRoom). A failure of the
  transaction itself (an sqlite3 error: disk full, I/O error, lock timeout)
  rolls it back and fails every caller of the group with StoreUnavailable.

What it must never do: import zmq, a UI or any crypto; decode or interpret
ops, envelopes or key packets (they are opaque bytes: the store never sees
plaintext); run sqlite3 on the event loop's thread; acknowledge a message
before the transaction that stores it has committed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from curvechat.store.base import (
    Committed,
    Conflict,
    EpochRecord,
    KeyTaken,
    MemberChange,
    NameTaken,
    NewMessage,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    Store,
    StoredRow,
    StoreUnavailable,
    UserRecord,
)

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

#: Stored in ``PRAGMA user_version``. A file with a newer version is refused.
SCHEMA_VERSION = 1
#: Stored in ``PRAGMA application_id`` ("cvch") to recognise our own files.
APPLICATION_ID = int.from_bytes(b"cvch", "big")

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
)

_ROOM_COLS = "room, head, epoch, epoch_after_op, op_head, created_ms"
_MSG_COLS = "room, seq, ts_ms, sender, txn, envelope"
_IN_CHUNK = 500  # names per "IN (...)" query, well below SQLite's variable limit

_T = TypeVar("_T")
_Outcome = list[Committed] | NoSuchRoom


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- helpers that run on the store's thread ---------------------------------


def _transaction(conn: sqlite3.Connection, body: Callable[[], _T], *, write: bool = True) -> _T:
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


def _room_record(row: Any) -> RoomRecord:
    return RoomRecord(
        room=row[0],
        head=row[1],
        epoch=row[2],
        epoch_after_op=row[3],
        op_head=row[4],
        created_ms=row[5],
    )


def _get_room(conn: sqlite3.Connection, room: str) -> RoomRecord | None:
    row = conn.execute(f"SELECT {_ROOM_COLS} FROM rooms WHERE room = ?", (room,)).fetchone()
    return None if row is None else _room_record(row)


def _require_room(conn: sqlite3.Connection, room: str) -> RoomRecord:
    record = _get_room(conn, room)
    if record is None:
        raise NoSuchRoom(room)
    return record


def _apply_changes(conn: sqlite3.Connection, room: str, changes: Sequence[MemberChange]) -> None:
    for change in changes:
        if change.present:
            conn.execute(
                "INSERT INTO members (room, user, admin) VALUES (?, ?, ?)"
                " ON CONFLICT (room, user) DO UPDATE SET admin = excluded.admin",
                (room, change.user, int(change.admin)),
            )
        else:
            conn.execute("DELETE FROM members WHERE room = ? AND user = ?", (room, change.user))


def _insert_epoch(conn: sqlite3.Connection, room: str, epoch: EpochRecord) -> None:
    conn.execute(
        "INSERT INTO epochs (room, epoch, after_op, creator) VALUES (?, ?, ?, ?)",
        (room, epoch.epoch, epoch.after_op, epoch.creator),
    )


def _insert_packets(conn: sqlite3.Connection, packets: Sequence[PacketRecord]) -> None:
    # The first packet for (room, epoch, recipient) wins; later ones are ignored.
    conn.executemany(
        "INSERT INTO packets (room, epoch, recipient, sender, box) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (room, epoch, recipient) DO NOTHING",
        [(p.room, p.epoch, p.recipient, p.sender, p.box) for p in packets],
    )


def _check_version(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the database has schema version {version}, newer than the {SCHEMA_VERSION} this"
            " curvechat supports: upgrade curvechat (the file was left unchanged)"
        )


def _migrate(conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    _check_version(version)
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
    elif app_id != APPLICATION_ID:
        raise StoreUnavailable("the file is an SQLite database but not a curvechat store")


def _append_groups(
    conn: sqlite3.Connection, batches: Sequence[Sequence[NewMessage]]
) -> tuple[list[_Outcome], int]:
    """Store several callers' batches in one transaction.

    Returns one outcome per batch (its acks, or NoSuchRoom when the batch
    names an unknown room: then nothing of that batch is written) and the
    number of messages newly stored.
    """

    def body() -> tuple[list[_Outcome], int]:
        now = _now_ms()
        # room -> [head, ts of the head message]; loaded once per transaction.
        state: dict[str, list[int]] = {}
        membership: dict[str, tuple[int, int]] = {}  # room -> (epoch, op_head)
        initial_heads: dict[str, int] = {}
        seen: dict[tuple[str, str, str], tuple[int, int]] = {}
        outcomes: list[_Outcome] = []
        stored = 0
        for batch in batches:
            missing: str | None = None
            for room in dict.fromkeys(m.room for m in batch):
                if room in state:
                    continue
                row = conn.execute(
                    "SELECT head, epoch, op_head FROM rooms WHERE room = ?", (room,)
                ).fetchone()
                if row is None:
                    missing = room
                    break
                head = int(row[0])
                membership[room] = (int(row[1]), int(row[2]))
                last_ts = 0
                if head > 0:
                    ts_row = conn.execute(
                        "SELECT ts_ms FROM messages WHERE room = ? AND seq = ?", (room, head)
                    ).fetchone()
                    last_ts = int(ts_row[0]) if ts_row is not None else 0
                state[room] = [head, last_ts]
                initial_heads[room] = head
            if missing is not None:
                outcomes.append(NoSuchRoom(missing))
                continue
            acks: list[Committed] = []
            for m in batch:
                key = (m.room, m.sender, m.txn)
                original = seen.get(key)
                if original is None:
                    row = conn.execute(
                        "SELECT seq, ts_ms FROM messages WHERE room = ? AND sender = ? AND txn = ?",
                        key,
                    ).fetchone()
                    if row is not None:
                        original = (int(row[0]), int(row[1]))
                        seen[key] = original
                if original is not None:
                    acks.append(Committed(m.room, m.txn, original[0], original[1], True))
                    continue
                if m.expect is not None and tuple(m.expect) != membership[m.room]:
                    acks.append(Committed(m.room, m.txn, 0, 0, False, stale=True))
                    continue
                room_state = state[m.room]
                seq = room_state[0] + 1
                ts = max(now, room_state[1])  # non-decreasing even if the clock steps back
                conn.execute(
                    f"INSERT INTO messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (m.room, seq, ts, m.sender, m.txn, m.envelope),
                )
                room_state[0], room_state[1] = seq, ts
                seen[key] = (seq, ts)
                acks.append(Committed(m.room, m.txn, seq, ts, False))
                stored += 1
            outcomes.append(acks)
        for room, (head, _) in state.items():
            if head != initial_heads[room]:
                conn.execute("UPDATE rooms SET head = ? WHERE room = ?", (head, room))
        return outcomes, stored

    return _transaction(conn, body)


@dataclass(slots=True)
class _Pending:
    batch: Sequence[NewMessage]
    future: asyncio.Future[list[Committed]]


class SQLiteStore(Store):
    """The `Store` on one SQLite file (see the module docstring).

    Beyond the `Store` contract:

    * The file (mode 0600) and its directory (mode 0700) are created if
      missing; an existing file is chmod-ed to 0600. A file whose schema
      version is newer than `SCHEMA_VERSION`, or an SQLite file that is not a
      curvechat store, is refused with StoreUnavailable.
    * Key packets: the FIRST packet stored for a (room, epoch, recipient) is
      kept; a later packet with the same key is silently ignored (it neither
      replaces the first nor raises).
    * Packets must name the room they are stored with, `create_room` takes
      ops indexed 0..n-1 and epoch 0: anything else is a caller bug and
      raises ValueError before the database is touched.
    * `messages` with both `after` and `before` returns the first `limit`
      messages with after < seq < before.
    * `append_messages`: a caller batch larger than `batch_max` is committed
      whole, in a transaction of its own. Counters: `commits` counts group
      transactions committed, `committed_messages` the messages newly stored
      by them (duplicates are not counted).
    * `busy_timeout_ms`: how long to wait for a lock held by another process
      before failing with StoreUnavailable.
    """

    def __init__(self, path: Path, *, batch_max: int = 256, busy_timeout_ms: int = 5000) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must not be negative")
        self.path = Path(path)
        self.batch_max = batch_max
        self.busy_timeout_ms = busy_timeout_ms
        self.commits = 0
        self.committed_messages = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Created, used and closed only on the executor's thread.
        self._conn: sqlite3.Connection | None = None
        self._closing = False
        self._queue: collections.deque[_Pending] = collections.deque()
        self._committer: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="curvechat-sqlite"
        )
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, self._connect)
        except BaseException as exc:
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreUnavailable(f"cannot open {self.path.name}: {exc}") from exc
            raise
        self._executor, self._conn = executor, conn

    def _connect(self) -> sqlite3.Connection:
        """Thread: create the file, connect, set the PRAGMAs, create the schema."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            # Refuse a newer file before anything (even the journal mode) is written.
            _check_version(int(conn.execute("PRAGMA user_version").fetchone()[0]))
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise StoreUnavailable(f"cannot switch {self.path.name} to WAL (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
                raise StoreUnavailable("SQLite refused synchronous=FULL")
            if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                raise StoreUnavailable("SQLite refused foreign_keys=ON")
            _transaction(conn, lambda: _migrate(conn))
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None or conn is None or self._closing:
            return
        self._closing = True  # new calls are refused from here on
        try:
            committer = self._committer
            if committer is not None and not committer.done():
                # wait() neither raises the task's outcome nor cancels it if we are.
                await asyncio.wait({committer})
            try:
                # Queued after every call already submitted: those finish first.
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"closing failed: {exc}") from exc
        finally:
            # The worker is idle once conn.close has run: the join is immediate.
            executor.shutdown(wait=True)
            self._executor = self._conn = self._committer = None
            self._closing = False

    async def ping(self) -> None:
        def job(conn: sqlite3.Connection) -> None:
            # Takes the write lock (then releases it) and reads a table.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("SELECT count(*) FROM rooms").fetchone()
            finally:
                conn.execute("ROLLBACK")

        await self._run(job)

    async def pragmas(self) -> dict[str, object]:
        """The settings in effect on the store's connection (for checks and diagnostics)."""

        def job(conn: sqlite3.Connection) -> dict[str, object]:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version")
            return {n: conn.execute(f"PRAGMA {n}").fetchone()[0] for n in names}

        return await self._run(job)

    # --- plumbing ----------------------------------------------------------------
    def _require_open(self) -> tuple[concurrent.futures.ThreadPoolExecutor, sqlite3.Connection]:
        if self._executor is None or self._conn is None or self._closing:
            raise StoreUnavailable("the store is not open")
        return self._executor, self._conn

    async def _run(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `job(conn)` on the store's thread; sqlite3 errors -> StoreUnavailable."""
        executor, conn = self._require_open()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, job, conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite error: {exc}") from exc

    # --- users -------------------------------------------------------------------
    async def register(self, user: str, sign_pub: bytes, transport_pub: bytes) -> None:
        def job(conn: sqlite3.Connection) -> None:
            def body() -> None:
                row = conn.execute("SELECT sign_pub FROM users WHERE user = ?", (user,)).fetchone()
                if row is not None and bytes(row[0]) != bytes(sign_pub):
                    raise NameTaken(user)
                owner = conn.execute(
                    "SELECT user FROM transports WHERE key = ?", (transport_pub,)
                ).fetchone()
                if owner is not None and owner[0] != user:
                    raise KeyTaken("the transport key belongs to another user")
                if row is None:
                    conn.execute(
                        "INSERT INTO users (user, sign_pub, registered_ms) VALUES (?, ?, ?)",
                        (user, sign_pub, _now_ms()),
                    )
                if owner is None:
                    conn.execute(
                        "INSERT INTO transports (key, user) VALUES (?, ?)", (transport_pub, user)
                    )

            _transaction(conn, body)

        await self._run(job)

    async def user_for_transport(self, transport_pub: bytes) -> str | None:
        def job(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT user FROM transports WHERE key = ?", (transport_pub,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(job)

    async def users(self, names: Sequence[str]) -> dict[str, UserRecord]:
        wanted = list(dict.fromkeys(names))

        def job(conn: sqlite3.Connection) -> dict[str, UserRecord]:
            def body() -> dict[str, UserRecord]:
                found: dict[str, UserRecord] = {}
                for i in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[i : i + _IN_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    for row in conn.execute(
                        f"SELECT user, sign_pub, registered_ms FROM users WHERE user IN ({marks})",
                        chunk,
                    ):
                        found[row[0]] = UserRecord(row[0], row[1], row[2])
                return found

            return _transaction(conn, body, write=False)

        if not wanted:
            self._require_open()
            return {}
        return await self._run(job)

    # --- rooms and membership --------------------------------------------------
    async def create_room(
        self,
        room: str,
        ops: Sequence[OpRecord],
        changes: Sequence[MemberChange],
        epoch: EpochRecord,
        packets: Sequence[PacketRecord],
    ) -> RoomRecord:
        ops, changes, packets = tuple(ops), tuple(changes), tuple(packets)
        if [op.index for op in ops] != list(range(len(ops))):
            raise ValueError("create_room takes ops indexed 0..n-1")
        if epoch.epoch != 0:
            raise ValueError("create_room starts epoch 0")
        _check_packets(room, packets)

        def job(conn: sqlite3.Connection) -> RoomRecord:
            def body() -> RoomRecord:
                if _get_room(conn, room) is not None:
                    raise RoomExists(room)
                record = RoomRecord(
                    room=room,
                    head=0,
                    epoch=epoch.epoch,
                    epoch_after_op=epoch.after_op,
                    op_head=len(ops) - 1,
                    created_ms=_now_ms(),
                )
                conn.execute(
                    f"INSERT INTO rooms ({_ROOM_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.room,
                        record.head,
                        record.epoch,
                        record.epoch_after_op,
                        record.op_head,
                        record.created_ms,
                    ),
                )
                conn.executemany(
                    "INSERT INTO ops (room, idx, op, sig) VALUES (?, ?, ?, ?)",
                    [(room, op.index, op.op, op.sig) for op in ops],
                )
                _apply_changes(conn, room, changes)
                _insert_epoch(conn, room, epoch)
                _insert_packets(conn, packets)
                return record

            return _transaction(conn, body)

        return await self._run(job)

    async def append_op(
        self,
        room: str,
        op: OpRecord,
        changes: Sequence[MemberChange],
        epoch: EpochRecord | None = None,
        packets: Sequence[PacketRecord] = (),
    ) -> RoomRecord:
        changes, packets = tuple(changes), tuple(packets)
        _check_packets(room, packets)

        def job(conn: sqlite3.Connection) -> RoomRecord:
            def body() -> RoomRecord:
                current = _require_room(conn, room)
                if op.index != current.op_head + 1:
                    raise Conflict(f"op index {op.index}, expected {current.op_head + 1}")
                if epoch is not None and epoch.epoch != current.epoch + 1:
                    raise Conflict(f"epoch {epoch.epoch}, expected {current.epoch + 1}")
                conn.execute(
                    "INSERT INTO ops (room, idx, op, sig) VALUES (?, ?, ?, ?)",
                    (room, op.index, op.op, op.sig),
                )
                _apply_changes(conn, room, changes)
                new_epoch, after_op = current.epoch, current.epoch_after_op
                if epoch is not None:
                    _insert_epoch(conn, room, epoch)
                    new_epoch, after_op = epoch.epoch, epoch.after_op
                _insert_packets(conn, packets)
                conn.execute(
                    "UPDATE rooms SET op_head = ?, epoch = ?, epoch_after_op = ? WHERE room = ?",
                    (op.index, new_epoch, after_op, room),
                )
                return RoomRecord(
                    room=room,
                    head=current.head,
                    epoch=new_epoch,
                    epoch_after_op=after_op,
                    op_head=op.index,
                    created_ms=current.created_ms,
                )

            return _transaction(conn, body)

        return await self._run(job)

    async def add_epoch(
        self, room: str, epoch: EpochRecord, packets: Sequence[PacketRecord]
    ) -> RoomRecord:
        packets = tuple(packets)
        _check_packets(room, packets)

        def job(conn: sqlite3.Connection) -> RoomRecord:
            def body() -> RoomRecord:
                current = _require_room(conn, room)
                if epoch.epoch != current.epoch + 1:
                    raise Conflict(f"epoch {epoch.epoch}, expected {current.epoch + 1}")
                _insert_epoch(conn, room, epoch)
                _insert_packets(conn, packets)
                conn.execute(
                    "UPDATE rooms SET epoch = ?, epoch_after_op = ? WHERE room = ?",
                    (epoch.epoch, epoch.after_op, room),
                )
                return RoomRecord(
                    room=room,
                    head=current.head,
                    epoch=epoch.epoch,
                    epoch_after_op=epoch.after_op,
                    op_head=current.op_head,
                    created_ms=current.created_ms,
                )

            return _transaction(conn, body)

        return await self._run(job)

    async def room(self, room: str) -> RoomRecord | None:
        return await self._run(lambda conn: _get_room(conn, room))

    async def ops(self, room: str, after: int = -1) -> list[OpRecord]:
        def job(conn: sqlite3.Connection) -> list[OpRecord]:
            def body() -> list[OpRecord]:
                _require_room(conn, room)
                rows = conn.execute(
                    "SELECT idx, op, sig FROM ops WHERE room = ? AND idx > ? ORDER BY idx",
                    (room, after),
                )
                return [OpRecord(r[0], r[1], r[2]) for r in rows]

            return _transaction(conn, body, write=False)

        return await self._run(job)

    async def members(self, room: str) -> dict[str, bool]:
        def job(conn: sqlite3.Connection) -> dict[str, bool]:
            def body() -> dict[str, bool]:
                _require_room(conn, room)
                rows = conn.execute(
                    "SELECT user, admin FROM members WHERE room = ? ORDER BY user", (room,)
                )
                return {r[0]: bool(r[1]) for r in rows}

            return _transaction(conn, body, write=False)

        return await self._run(job)

    async def rooms_of(self, user: str) -> list[RoomRecord]:
        cols = ", ".join(f"r.{c.strip()}" for c in _ROOM_COLS.split(","))

        def job(conn: sqlite3.Connection) -> list[RoomRecord]:
            rows = conn.execute(
                f"SELECT {cols} FROM members m JOIN rooms r ON r.room = m.room"
                " WHERE m.user = ? ORDER BY r.room",
                (user,),
            )
            return [_room_record(r) for r in rows]

        return await self._run(job)

    async def key_packets(
        self, room: str, recipient: str, min_epoch: int = 0
    ) -> list[PacketRecord]:
        def job(conn: sqlite3.Connection) -> list[PacketRecord]:
            def body() -> list[PacketRecord]:
                _require_room(conn, room)
                rows = conn.execute(
                    "SELECT room, epoch, recipient, sender, box FROM packets"
                    " WHERE room = ? AND recipient = ? AND epoch >= ? ORDER BY epoch",
                    (room, recipient, min_epoch),
                )
                return [PacketRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

            return _transaction(conn, body, write=False)

        return await self._run(job)

    # --- messages ----------------------------------------------------------------
    async def append_messages(self, batch: Sequence[NewMessage]) -> list[Committed]:
        self._require_open()
        batch = tuple(batch)  # the caller may reuse its list while we wait
        if not batch:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Committed]] = loop.create_future()
        self._queue.append(_Pending(batch, future))
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_loop(), name="curvechat-sqlite-commit")
        return await future

    def _take_group(self) -> list[_Pending]:
        """Whole caller batches from the queue, up to batch_max messages (at least one)."""
        group: list[_Pending] = []
        count = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the caller gave up before the commit: skip it
                self._queue.popleft()
                continue
            if group and count + len(pending.batch) > self.batch_max:
                break
            self._queue.popleft()
            group.append(pending)
            count += len(pending.batch)
        return group

    async def _commit_loop(self) -> None:
        """The committer: one group transaction at a time while callers are queued."""
        loop = asyncio.get_running_loop()
        group: list[_Pending] = []
        try:
            while self._queue:
                group = self._take_group()
                if not group:
                    break
                executor, conn = self._executor, self._conn
                if executor is None or conn is None:  # pragma: no cover - close() waits for us
                    raise StoreUnavailable("the store is not open")
                batches = [p.batch for p in group]
                try:
                    outcomes, stored = await loop.run_in_executor(
                        executor, _append_groups, conn, batches
                    )
                except Exception as exc:
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(_as_unavailable(exc))
                    group = []
                    continue
                self.commits += 1
                self.committed_messages += stored
                for pending, outcome in zip(group, outcomes, strict=True):
                    if pending.future.done():
                        continue
                    if isinstance(outcome, NoSuchRoom):
                        pending.future.set_exception(outcome)
                    else:
                        pending.future.set_result(outcome)
                group = []
        finally:
            # Only with work left when this task is cancelled (the loop is going
            # away): whether that work was committed is unknown, so the callers
            # are cancelled rather than told "nothing changed".
            for pending in [*group, *self._queue]:
                pending.future.cancel()
            self._queue.clear()

    async def messages(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[StoredRow]:
        def job(conn: sqlite3.Connection) -> list[StoredRow]:
            def body() -> list[StoredRow]:
                _require_room(conn, room)
                if limit <= 0:
                    return []
                select = f"SELECT {_MSG_COLS} FROM messages WHERE room = ?"
                if after is not None and before is not None:
                    rows = conn.execute(
                        f"{select} AND seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                        (room, after, before, limit),
                    ).fetchall()
                elif after is not None:
                    rows = conn.execute(
                        f"{select} AND seq > ? ORDER BY seq LIMIT ?", (room, after, limit)
                    ).fetchall()
                elif before is not None:
                    rows = conn.execute(
                        f"{select} AND seq < ? ORDER BY seq DESC LIMIT ?", (room, before, limit)
                    ).fetchall()[::-1]
                else:
                    rows = conn.execute(
                        f"{select} ORDER BY seq DESC LIMIT ?", (room, limit)
                    ).fetchall()[::-1]
                return [StoredRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

            return _transaction(conn, body, write=False)

        return await self._run(job)


def _check_packets(room: str, packets: Sequence[PacketRecord]) -> None:
    for packet in packets:
        if packet.room != room:
            raise ValueError(f"a key packet for room {packet.room!r} given for room {room!r}")


def _as_unavailable(exc: Exception) -> Exception:
    """A fresh exception per caller (tracebacks are per raise)."""
    if isinstance(exc, sqlite3.Error):
        error = StoreUnavailable(f"the commit failed and was rolled back: {exc}")
        error.__cause__ = exc
        return error
    return exc
