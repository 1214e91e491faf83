"""The SQLite group append alone (no event loop): few statements per group,
what it keeps in memory, and what it does when memory is not enough."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from curvechat.store import Committed, NewMessage, NoSuchRoom
from curvechat.store.sqlite_append import GroupAppender
from curvechat.store.sqlite_schema import connect


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "db", 1000)
    c.execute("BEGIN IMMEDIATE")
    for room in ("r1", "r2"):
        c.execute("INSERT INTO rooms VALUES (?, 0, 0, 0, 0, 0)", (room,))
    c.execute("COMMIT")
    yield c
    c.close()


def m(room: str, txn: str, sender: str = "alice") -> NewMessage:
    return NewMessage(room, sender, txn, txn.encode())


def acks(outcome: object) -> list[Committed]:
    assert isinstance(outcome, list)
    return outcome


def test_a_group_is_a_handful_of_statements_in_steady_state(conn: sqlite3.Connection) -> None:
    a = GroupAppender(conn)
    a.append([[m("r1", "warm"), m("r2", "warm")]])  # reads the rooms once
    before = a.statements
    batches = [[m(f"r{1 + i % 2}", f"t{i}")] for i in range(200)]
    outcomes, stored = a.append(batches)
    assert stored == 200
    # BEGIN, data_version, the INSERTs of 128, 64 and 8 rows, heads, COMMIT
    assert a.statements - before == 7
    assert [acks(o)[0].seq for o in outcomes[:4]] == [2, 2, 3, 3]
    heads = dict(conn.execute("SELECT room, head FROM rooms").fetchall())
    assert heads == {"r1": 101, "r2": 101}
    assert a.retries == 0


def test_an_old_key_not_in_memory_is_found_in_the_file(conn: sqlite3.Connection) -> None:
    a = GroupAppender(conn, keys_max=4)
    for i in range(10):
        a.append([[m("r1", f"t{i}")]])
    first = conn.execute("SELECT seq, ts_ms FROM messages WHERE txn = 't0'").fetchone()
    # t9 is remembered: answered from memory.
    (recent,), _ = a.append([[m("r1", "t9")]])
    assert (acks(recent)[0].seq, acks(recent)[0].duplicate) == (10, True)
    assert a.retries == 0
    # t0 was forgotten: the insert trips the UNIQUE constraint, the group is
    # planned again from the file, and the resend is still a duplicate.
    (old, new), stored = a.append([[m("r1", "t0")], [m("r1", "t10")]])
    assert a.retries == 1
    assert stored == 1
    assert (acks(old)[0].seq, acks(old)[0].ts_ms, acks(old)[0].duplicate) == (*first, True)
    assert (acks(new)[0].seq, acks(new)[0].duplicate) == (11, False)
    assert [r[0] for r in conn.execute("SELECT seq FROM messages ORDER BY seq")] == list(
        range(1, 12)
    )


def test_a_sender_resending_old_keys_costs_one_retry_not_one_a_group(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curvechat.store import sqlite_append

    clock = [1_000_000]
    monkeypatch.setattr(sqlite_append, "_clock_ms", lambda: clock[0])
    a = GroupAppender(conn, keys_max=4)
    for i in range(10):
        a.append([[m("r1", f"t{i}", "mallory")], [m("r1", f"h{i}", "bob")]])
    # mallory's t0 is forgotten: the first resend rolls its group back once.
    (old, new), _ = a.append([[m("r1", "t0", "mallory")], [m("r1", "h10", "bob")]])
    assert a.retries == 1
    assert acks(old)[0].duplicate and not acks(new)[0].duplicate
    # Her next old txns are looked up first, in the group's one lookup: no retry.
    for i, txn in enumerate(("t1", "t2", "t3")):
        before = a.statements
        (again, honest), _ = a.append([[m("r1", txn, "mallory")], [m("r1", f"k{i}", "bob")]])
        assert a.retries == 1
        assert a.statements - before == 6  # the five, and one lookup
        assert acks(again)[0].duplicate and not acks(honest)[0].duplicate
    # Her new messages are stored as usual meanwhile, and others pay nothing.
    (fresh,), _ = a.append([[m("r1", "u1", "mallory")]])
    assert not acks(fresh)[0].duplicate
    before = a.statements
    a.append([[m("r1", "k9", "bob")]])
    assert a.statements - before == 5
    # A minute later she is trusted again: the next old resend costs one retry.
    clock[0] += sqlite_append.SUSPECT_MS + 1
    (late,), _ = a.append([[m("r1", "t4", "mallory")]])
    assert a.retries == 2 and acks(late)[0].duplicate
    seqs = [r[0] for r in conn.execute("SELECT seq FROM messages ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_predecessor_is_read_from_the_file_only_when_not_in_memory(
    conn: sqlite3.Connection,
) -> None:
    a = GroupAppender(conn, keys_max=4)
    for i in range(10):
        a.append([[m("r1", f"t{i}")]])
    after = NewMessage("r1", "alice", "u1", b"", after="t9")  # remembered
    before = a.statements
    (got,), _ = a.append([[after, NewMessage("r1", "alice", "u2", b"", after="u1")]])
    assert [(c.seq, c.behind) for c in acks(got)] == [(11, False), (12, False)]
    assert a.statements - before == 5  # no lookup: t9 remembered, u1 in the group
    before = a.statements
    (old, gone), _ = a.append(
        [
            [NewMessage("r1", "alice", "u3", b"", after="t0")],  # forgotten: in the file
            [NewMessage("r1", "alice", "u4", b"", after="never")],
        ]
    )
    assert a.statements - before == 6  # one lookup for both
    assert (acks(old)[0].seq, acks(old)[0].behind) == (13, False)
    assert (acks(gone)[0].seq, acks(gone)[0].behind) == (0, True)


def test_a_failed_group_leaves_nothing_and_memory_unmoved(conn: sqlite3.Connection) -> None:
    a = GroupAppender(conn)
    a.append([[m("r1", "t0")]])
    conn.execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON messages WHEN NEW.txn = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        a.append([[m("r1", "t1")], [m("r1", "boom")]])
    assert not conn.in_transaction
    conn.execute("DROP TRIGGER boom")
    (got,), _ = a.append([[m("r1", "t1")]])
    assert (acks(got)[0].seq, acks(got)[0].duplicate) == (2, False)
    assert conn.execute("SELECT head FROM rooms WHERE room = 'r1'").fetchone()[0] == 2


def test_a_room_changed_elsewhere_is_read_again(conn: sqlite3.Connection, tmp_path: Path) -> None:
    a = GroupAppender(conn)
    a.append([[m("r1", "t0")]])
    other = sqlite3.connect(tmp_path / "db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO messages VALUES ('r1', 2, 5, 'bob', 'x', x'00')")
        other.execute("UPDATE rooms SET head = 2, epoch = 1 WHERE room = 'r1'")
        other.execute("COMMIT")
    finally:
        other.close()
    stale = NewMessage("r1", "alice", "late", b"", expect=(0, 0))
    (got,), _ = a.append([[m("r1", "t1"), stale]])
    assert [(c.seq, c.stale) for c in acks(got)] == [(3, False), (0, True)]


def test_an_unknown_room_fails_only_its_batch(conn: sqlite3.Connection) -> None:
    a = GroupAppender(conn)
    (ok, bad), stored = a.append([[m("r1", "t0")], [m("r2", "t1"), m("nope", "t2")]])
    assert isinstance(bad, NoSuchRoom)
    assert stored == 1 and acks(ok)[0].seq == 1
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


def test_a_group_larger_than_one_insert_is_stored_whole_and_in_order(
    conn: sqlite3.Connection,
) -> None:
    a = GroupAppender(conn)
    batches = [[m("r1", f"t{i}") for i in range(1000)], [m("r2", "x")]]
    outcomes, stored = a.append(batches)
    assert stored == 1001
    assert [ack.seq for ack in acks(outcomes[0])] == list(range(1, 1001))
    rows = conn.execute("SELECT seq, txn FROM messages WHERE room = 'r1' ORDER BY seq").fetchall()
    assert rows == [(i + 1, f"t{i}") for i in range(1000)]


def test_rows_per_insert_fit_the_variables_this_sqlite_allows(conn: sqlite3.Connection) -> None:
    """SQLite before 3.32 (and builds made so since) binds at most 999
    variables a statement: 256 rows of six would fail every big group."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    a = GroupAppender(conn)
    outcomes, stored = a.append([[m("r1", f"t{i}") for i in range(300)]])
    assert stored == 300
    assert [ack.seq for ack in acks(outcomes[0])] == list(range(1, 301))
