"""SQLite-only behaviour: files, PRAGMAs, schema versions, group commit, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from curvechat.store import (
    ContactsRecord,
    EpochRecord,
    MemberChange,
    NewMessage,
    OpRecord,
    PacketRecord,
    SQLiteStore,
    StoreUnavailable,
)
from curvechat.store.sqlite import APPLICATION_ID, SCHEMA_VERSION
from curvechat.store.sqlite_schema import _CONTACTS, _SCHEMA


def msg(room: str, sender: str, txn: str) -> NewMessage:
    return NewMessage(room=room, sender=sender, txn=txn, envelope=txn.encode())


async def make_room(store: SQLiteStore, room: str) -> None:
    await store.create_room(
        room,
        [OpRecord(0, b"op", b"sig")],
        [MemberChange("alice", True, True)],
        EpochRecord(0, 0, "alice"),
        [PacketRecord(room, 0, "alice", "alice", b"box")],
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "missing" / "dir" / "chat.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_path)
    await s.open()
    yield s
    await s.close()


# --- files and settings ----------------------------------------------------------
async def test_file_and_directory_are_private(db_path: Path) -> None:
    old_umask = os.umask(0o022)  # a permissive umask must not leak into the file mode
    try:
        s = SQLiteStore(db_path)
        await s.open()
        try:
            await make_room(s, "r")
            await s.append_messages([msg("r", "alice", "t")])
            assert mode(db_path) == 0o600
            assert mode(db_path.parent) == 0o700
            wal = db_path.with_name(db_path.name + "-wal")
            assert wal.exists()  # WAL mode: the commit went to the log
            assert mode(wal) == 0o600
        finally:
            await s.close()
    finally:
        os.umask(old_umask)


async def test_existing_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    s = SQLiteStore(path)
    await s.open()
    await s.close()
    assert mode(path) == 0o600


async def test_pragmas_in_effect(store: SQLiteStore, db_path: Path) -> None:
    assert await store.pragmas() == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "user_version": SCHEMA_VERSION,
    }
    raw = sqlite3.connect(db_path)
    try:  # WAL is a property of the file, seen by any connection
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        raw.close()


async def test_newer_schema_version_is_refused(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    await s.close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    content = db_path.read_bytes()

    newer = SQLiteStore(db_path)
    with pytest.raises(StoreUnavailable, match="newer"):
        await newer.open()
    with pytest.raises(StoreUnavailable):
        await newer.ping()  # not open
    assert db_path.read_bytes() == content  # left unchanged


def schema_of(path: Path) -> list[tuple[str, str]]:
    raw = sqlite3.connect(path)
    try:
        return raw.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        raw.close()


async def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    # A file as version 1 made it: the schema without the contacts table.
    path = tmp_path / "v1.sqlite3"
    raw = sqlite3.connect(path)
    for statement in _SCHEMA:
        if statement not in _CONTACTS:
            raw.execute(statement)
    raw.execute("INSERT INTO users VALUES ('alice', x'01', 1)")
    raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()

    s = SQLiteStore(path)
    await s.open()
    try:
        assert (await s.pragmas())["user_version"] == SCHEMA_VERSION == 2
        assert list(await s.users(["alice"])) == ["alice"]
        assert await s.contacts(["alice"]) == {}
        record = ContactsRecord(users=("bob",))
        await s.put_contacts("alice", record, None)
        assert await s.contacts(["alice"]) == {"alice": record}
    finally:
        await s.close()
    fresh = SQLiteStore(tmp_path / "fresh.sqlite3")
    await fresh.open()
    await fresh.close()
    assert schema_of(path) == schema_of(fresh.path)  # the same as a new file's


async def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE something (x)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreUnavailable, match="not a curvechat store"):
        await SQLiteStore(path).open()


async def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable) as info:
        await SQLiteStore(path).open()
    assert isinstance(info.value.__cause__, sqlite3.Error)


# --- group commit ------------------------------------------------------------------
async def test_group_commit_batches_concurrent_callers(store: SQLiteStore) -> None:
    await make_room(store, "r")
    calls = 200
    results = await asyncio.gather(
        *(store.append_messages([msg("r", f"u{i}", "t")]) for i in range(calls))
    )
    assert sorted(r[0].seq for r in results) == list(range(1, calls + 1))
    assert store.committed_messages == calls
    assert 1 <= store.commits < calls
    # The queue is taken whole (up to batch_max): all 200 fit in one group.
    assert store.commits == 1

    # Duplicates are acknowledged but are not new messages.
    await asyncio.gather(*(store.append_messages([msg("r", f"u{i}", "t")]) for i in range(10)))
    assert store.committed_messages == calls
    assert store.commits == 2


async def test_group_commit_respects_batch_max(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "chat.sqlite3", batch_max=10)
    await s.open()
    try:
        await make_room(s, "r")
        await asyncio.gather(*(s.append_messages([msg("r", "a", f"t{i}")]) for i in range(100)))
        assert s.committed_messages == 100
        assert 10 <= s.commits < 100
        # A caller batch larger than batch_max is committed whole, in one transaction.
        commits = s.commits
        acks = await s.append_messages([msg("r", "a", f"big{i}") for i in range(25)])
        assert [a.seq for a in acks] == list(range(101, 126))
        assert s.commits == commits + 1
    finally:
        await s.close()


async def test_failed_commit_fails_the_whole_group_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    s = SQLiteStore(path, busy_timeout_ms=50)
    await s.open()
    try:
        await make_room(s, "r")
        await s.append_messages([msg("r", "a", "before")])
        commits = s.commits
        # Another process holds the write lock longer than our busy timeout.
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            results = await asyncio.gather(
                *(s.append_messages([msg("r", "a", f"t{i}")]) for i in range(5)),
                return_exceptions=True,
            )
            assert all(isinstance(r, StoreUnavailable) for r in results)
            assert all(isinstance(r.__cause__, sqlite3.OperationalError) for r in results)  # type: ignore[union-attr]
            assert len({id(r) for r in results}) == 5  # one exception per caller
            with pytest.raises(StoreUnavailable):
                await s.register("bob", b"sign", b"tr")
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert s.commits == commits
        # Nothing of the failed group was stored; seqs continue without a gap.
        acks = await s.append_messages([msg("r", "a", "t0"), msg("r", "a", "t1")])
        assert [(a.seq, a.duplicate) for a in acks] == [(2, False), (3, False)]
        assert [r.txn for r in await s.messages("r")] == ["before", "t0", "t1"]
        await s.register("bob", b"sign", b"tr")
    finally:
        await s.close()


async def test_caller_cancelled_before_commit_is_skipped(store: SQLiteStore) -> None:
    await make_room(store, "r")
    first = asyncio.create_task(store.append_messages([msg("r", "a", "first")]))
    gone = asyncio.create_task(store.append_messages([msg("r", "a", "gone")]))
    last = asyncio.create_task(store.append_messages([msg("r", "a", "last")]))

    async def cancel_gone() -> None:
        # Runs after the three callers queued, before the committer task starts.
        gone.cancel()

    await asyncio.create_task(cancel_gone())
    assert [a.seq for a in await first] == [1]
    assert [a.seq for a in await last] == [2]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert [r.txn for r in await store.messages("r")] == ["first", "last"]


async def test_close_finishes_pending_commits(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    await make_room(s, "r")
    # gather starts the appends (they queue) before close() runs.
    *results, closed = await asyncio.gather(
        *(s.append_messages([msg("r", "a", f"t{i}")]) for i in range(20)), s.close()
    )
    assert closed is None
    assert sorted(r[0].seq for r in results if r is not None) == list(range(1, 21))
    assert None not in results
    with pytest.raises(StoreUnavailable):
        await s.append_messages([msg("r", "a", "late")])
    reopened = SQLiteStore(db_path)
    await reopened.open()
    try:
        assert [r.seq for r in await reopened.messages("r")] == list(range(1, 21))
    finally:
        await reopened.close()


# --- documented SQLite choices ------------------------------------------------------
async def test_first_key_packet_is_kept(store: SQLiteStore) -> None:
    await make_room(store, "r")
    await store.append_op(
        "r",
        OpRecord(1, b"op1", b"sig1"),
        [MemberChange("bob", True)],
        None,
        [PacketRecord("r", 0, "bob", "alice", b"first"), PacketRecord("r", 0, "bob", "x", b"2nd")],
    )
    await store.add_epoch(
        "r", EpochRecord(1, 1, "alice"), [PacketRecord("r", 0, "bob", "y", b"third")]
    )
    assert [p.box for p in await store.key_packets("r", "bob")] == [b"first"]


async def test_malformed_input_is_a_value_error(store: SQLiteStore) -> None:
    with pytest.raises(ValueError):
        await store.create_room("r", [OpRecord(1, b"", b"")], [], EpochRecord(0, 0, "alice"), [])
    with pytest.raises(ValueError):
        await store.create_room("r", [], [], EpochRecord(1, 0, "alice"), [])
    with pytest.raises(ValueError):
        await store.create_room(
            "r", [], [], EpochRecord(0, 0, "a"), [PacketRecord("other", 0, "a", "a", b"")]
        )
    assert await store.room("r") is None
    with pytest.raises(ValueError):
        SQLiteStore(Path("unused"), batch_max=0)


# --- crash ---------------------------------------------------------------------------
CHILD = """
import asyncio, sys
from pathlib import Path
from curvechat.store import NewMessage, SQLiteStore

async def writer(store, w):
    i = 0
    while True:
        txn = f"w{w}-{i}"
        batch = [NewMessage(room="r", sender=f"w{w}", txn=txn, envelope=b"x" * 200)]
        for ack in await store.append_messages(batch):
            print(ack.seq, ack.txn, flush=True)
        i += 1

async def main():
    store = SQLiteStore(Path(sys.argv[1]))
    await store.open()
    print("ready", flush=True)
    await asyncio.gather(*(writer(store, w) for w in range(4)))

asyncio.run(main())
"""


async def test_acknowledged_messages_survive_sigkill(db_path: Path) -> None:
    s = SQLiteStore(db_path)
    await s.open()
    await make_room(s, "r")
    await s.close()

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(db_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: dict[int, str] = {}
    try:
        async with asyncio.timeout(120):
            first = await proc.stdout.readline()
            assert first == b"ready\n", first + await proc.stdout.read()
            while len(acked) < 500:
                line = await proc.stdout.readline()
                assert line.endswith(b"\n"), "the writer died early"
                seq, txn = line.decode().split()
                acked[int(seq)] = txn
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        _, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()

    reopened = SQLiteStore(db_path)
    await reopened.open()
    try:
        rows = await reopened.messages("r", after=0, limit=1_000_000)
        stored = {r.seq: r.txn for r in rows}
        assert {seq: stored.get(seq) for seq in acked} == acked
        assert list(stored) == list(range(1, len(stored) + 1))
        record = await reopened.room("r")
        assert record is not None and record.head == len(stored)
    finally:
        await reopened.close()
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        raw.close()
