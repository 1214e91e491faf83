"""The embedded SQLite backend of the store: one file, one thread, group commit.

What it is for: a single-server deployment keeps users, their contacts,
rooms, membership logs, epochs, key packets and message envelopes in one
SQLite file (WAL mode, ``synchronous=FULL``), so that every acknowledged
write survives a crash or a power cut.

How it works:

* Every sqlite3 call runs on ONE dedicated thread (a single-worker
  executor that owns the connection, created in `open`), awaited with
  ``loop.run_in_executor``. The event loop never blocks on disk I/O, and the
  calls are serialized in submission order. Opening the file, its settings
  and its schema are in `curvechat.store.sqlite_schema`, the statements of
  every call but the group append in `curvechat.store.sqlite_queries`.
* `append_messages` uses group commit (`curvechat.store.committer`): the
  callers' batches are queued and each group goes to the store's thread in
  ONE call, which stores it in ONE transaction (one fsync of the WAL) with
  a handful of statements (`curvechat.store.sqlite_append`), then each
  caller is resolved with its results. The counters
  `SQLiteStore.commits` and `SQLiteStore.committed_messages` show how well
  that batches; `SQLiteStore.group_stats` what a group costs.
* Each caller's batch is all-or-nothing: rooms are checked per caller inside
  the shared transaction before anything of that caller is written, so one
  caller's unknown room fails only that caller (NoSuchRoom). A failure of the
  transaction itself (an sqlite3 error: disk full, I/O error, lock timeout)
  rolls it back and fails every caller of the group with StoreUnavailable.

What it must never do: import zmq, a UI or any crypto; decode or interpret
ops, envelopes or key packets (they are opaque bytes: the store never sees
plaintext); run sqlite3 on the event loop's thread; acknowledge a message
before the transaction that stores it has committed; change a room's row
without telling the group append (`GroupAppender.forget`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from curvechat.store import sqlite_queries as q
from curvechat.store.base import (
    Committed,
    ContactsRecord,
    EpochRecord,
    MemberChange,
    NewMessage,
    OpRecord,
    PacketRecord,
    RoomRecord,
    Store,
    StoredRow,
    StoreUnavailable,
    UserRecord,
    check_new_room,
    check_packets,
)
from curvechat.store.committer import GroupCommitter, Outcome
from curvechat.store.reserve import DEFAULT_MIN_FREE, DiskReserve, Need
from curvechat.store.sqlite_append import GroupAppender
from curvechat.store.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION, connect

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

_T = TypeVar("_T")


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
    * `min_free_bytes`: the space kept free on the file's disk
      (`store/reserve.py`, `reserve`): under it, `register`, `put_contacts`,
      `create_room` and `append_messages` raise StoreFull (a
      StoreUnavailable) before anything is written, and so does
      `check_space`, which the node asks before the membership changes that
      can wait. 0 turns it off.
    """

    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 256,
        busy_timeout_ms: int = 5000,
        min_free_bytes: int = DEFAULT_MIN_FREE,
    ) -> None:
        if busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must not be negative")
        self.path = Path(path)
        self.reserve = DiskReserve(self.path.parent, min_free_bytes)
        self.busy_timeout_ms = busy_timeout_ms
        self.commits = 0
        self.committed_messages = 0
        self._committer = GroupCommitter(
            self._commit_group, batch_max=batch_max, name="curvechat-sqlite-commit"
        )
        self.batch_max = batch_max
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Created, used and closed only on the executor's thread.
        self._conn: sqlite3.Connection | None = None
        self._appender: GroupAppender | None = None
        self._closing = False

    # --- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="curvechat-sqlite"
        )
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, connect, self.path, self.busy_timeout_ms)
        except BaseException as exc:
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreUnavailable(f"cannot open {self.path.name}: {exc}") from exc
            raise
        self._executor, self._conn = executor, conn
        self._appender = GroupAppender(conn)

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None or conn is None or self._closing:
            return
        self._closing = True  # new calls are refused from here on
        try:
            await self._committer.drain()
            try:
                # Queued after every call already submitted: those finish first.
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"closing failed: {exc}") from exc
        finally:
            # The worker is idle once conn.close has run: the join is immediate.
            executor.shutdown(wait=True)
            self._executor = self._conn = self._appender = None
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

    def check_space(self, need: Need = "content") -> None:
        self.reserve.check(need)

    # --- users -------------------------------------------------------------------
    async def register(self, user: str, sign_pub: bytes, transport_pub: bytes) -> None:
        self.reserve.check()
        await self._run(
            functools.partial(q.register, user=user, sign_pub=sign_pub, transport_pub=transport_pub)
        )

    async def user_for_transport(self, transport_pub: bytes) -> str | None:
        return await self._run(functools.partial(q.user_for_transport, transport_pub=transport_pub))

    async def users(self, names: Sequence[str]) -> dict[str, UserRecord]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            self._require_open()
            return {}
        return await self._run(functools.partial(q.users, wanted=wanted))

    async def contacts(self, users: Sequence[str]) -> dict[str, ContactsRecord]:
        wanted = list(dict.fromkeys(users))
        if not wanted:
            self._require_open()
            return {}
        return await self._run(functools.partial(q.contacts, users=wanted))

    async def put_contacts(
        self, user: str, record: ContactsRecord, expect: ContactsRecord | None
    ) -> None:
        self.reserve.check()
        await self._run(functools.partial(q.put_contacts, user=user, record=record, expect=expect))

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
        check_new_room(room, ops, epoch, packets)
        self.reserve.check()
        return await self._run(
            functools.partial(
                q.create_room, room=room, ops=ops, changes=changes, epoch=epoch, packets=packets
            )
        )

    async def append_op(
        self,
        room: str,
        op: OpRecord,
        changes: Sequence[MemberChange],
        epoch: EpochRecord | None = None,
        packets: Sequence[PacketRecord] = (),
    ) -> RoomRecord:
        changes, packets = tuple(changes), tuple(packets)
        check_packets(room, packets)
        return await self._change_room(room, op, changes, epoch, packets)

    async def add_epoch(
        self, room: str, epoch: EpochRecord, packets: Sequence[PacketRecord]
    ) -> RoomRecord:
        packets = tuple(packets)
        check_packets(room, packets)
        return await self._change_room(room, None, (), epoch, packets)

    async def put_packets(self, room: str, packets: Sequence[PacketRecord]) -> int:
        packets = tuple(packets)
        check_packets(room, packets)
        return await self._run(functools.partial(q.put_packets, room=room, packets=packets))

    async def _change_room(
        self,
        room: str,
        op: OpRecord | None,
        changes: Sequence[MemberChange],
        epoch: EpochRecord | None,
        packets: Sequence[PacketRecord],
    ) -> RoomRecord:
        def job(conn: sqlite3.Connection) -> RoomRecord:
            # The room's row changes: the group append must read it again.
            if self._appender is not None:
                self._appender.forget(room)
            return q.change_room(conn, room, op, changes, epoch, packets)

        return await self._run(job)

    async def room(self, room: str) -> RoomRecord | None:
        return await self._run(functools.partial(q.get_room, room=room))

    async def ops(self, room: str, after: int = -1, limit: int | None = None) -> list[OpRecord]:
        return await self._run(functools.partial(q.ops, room=room, after=after, limit=limit))

    async def members(self, room: str) -> dict[str, bool]:
        return await self._run(functools.partial(q.members, room=room))

    async def member_counts(self, rooms: Sequence[str]) -> dict[str, int]:
        return await self._run(functools.partial(q.member_counts, rooms=list(rooms)))

    async def room_counts(self, users: Sequence[str]) -> dict[str, int]:
        return await self._run(functools.partial(q.room_counts, users=list(users)))

    async def rooms_of(self, user: str) -> list[RoomRecord]:
        return await self._run(functools.partial(q.rooms_of, user=user))

    async def key_packets(
        self, room: str, recipient: str, min_epoch: int = 0, limit: int | None = None
    ) -> list[PacketRecord]:
        return await self._run(
            functools.partial(
                q.key_packets, room=room, recipient=recipient, min_epoch=min_epoch, limit=limit
            )
        )

    # --- messages ----------------------------------------------------------------
    async def append_messages(self, batch: Sequence[NewMessage]) -> list[Committed]:
        return await self.submit_messages(batch)

    def submit_messages(self, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        self._require_open()
        self.reserve.check()
        if not batch:
            done: asyncio.Future[list[Committed]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return self._committer.submit(batch)

    @property
    def group_stats(self) -> dict[str, float]:
        """What the group appends cost on the store's thread so far: groups,
        statements, retries (groups planned again from the file), seconds."""
        a = self._appender
        if a is None:
            return {}
        return {
            "groups": a.groups,
            "statements": a.statements,
            "retries": a.retries,
            "seconds": a.seconds,
        }

    async def _commit_group(self, batches: list[Sequence[NewMessage]]) -> list[Outcome]:
        """The committer's call: one round trip to the store's thread per group."""
        # Not _require_open: close() lets the queued groups finish first.
        executor, appender = self._executor, self._appender
        if executor is None or appender is None:  # pragma: no cover - close() drains first
            raise StoreUnavailable("the store is not open")
        try:
            outcomes, stored = await asyncio.get_running_loop().run_in_executor(
                executor, appender.append, batches
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the commit failed and was rolled back: {exc}") from exc
        self.commits += 1
        self.committed_messages += stored
        return outcomes

    async def messages(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> list[StoredRow]:
        return await self._run(
            functools.partial(
                q.messages, room=room, after=after, before=before, limit=limit, max_bytes=max_bytes
            )
        )
