"""The SQLite store's group append: many callers' messages, one transaction,
a handful of sqlite3 calls.

What it is for: `GroupAppender.append` stores the batches of one group
commit (see `curvechat.store.committer`) in ONE transaction: one fsync and
a handful of statements in steady state, whatever the group's size (before, it was
two statements per message, a duplicate check and an insert, plus three per
room, each of them a hand-over of the GIL that, while the event loop is
busy, may wait for the interpreter's switch interval to come back).

How it keeps the statements few:

* Room state in memory: each room's head seq, the timestamp of its head
  message, its epoch and op head, read from the file once, then kept up to
  date by the appender itself. The store's thread is the only writer on its
  connection; `forget` drops a room whose membership or epoch the store
  changed; and ``PRAGMA data_version`` (read once per group, inside the
  write lock) shows whether ANOTHER connection committed since the last
  group, in which case everything remembered is dropped and read again.
* Recent idempotency keys in memory (the last `KEYS_MAX` stored or seen):
  a resend found there is answered without a query. A key not found there
  is not looked up either: the messages are inserted optimistically and
  the table's UNIQUE (room, sender, txn) constraint is the check. If it
  fires (an older resend, or a room that moved) the transaction is rolled
  back and the group is planned again from the file: one query for all of
  its keys and rooms. The senders whose old keys made it fire are then
  looked up before the insert for `SUSPECT_MS` (one query for the group's
  keys of such senders, in the query for predecessors): a sender that
  keeps resending its old txns costs one retry a minute, not one a group.
* Rows are inserted by multi-row ``INSERT ... VALUES (...), (...)``
  statements of a power of two rows each (at most 256: a group of 253 is
  seven statements) and the heads moved by one ``executemany``. An
  ``executemany`` steps each row apart and gives the GIL up and takes it
  back around every step; while the event loop is busy that took about
  three times the rows' cost in wall time. Multi-row statements cost more
  CPU (about 40% for the same rows) but only wait for the GIL once per
  statement. Measured when the event loop stopped being the bound (the
  fan-out's shared frames, 2026-12-07): a group's time on the store's
  thread went from 6.5 to 4.5 ms (p50), its cycle from 9.1 to 7.0 ms
  (docs/performance.md, "Shared push frames, and rows in multi-row
  INSERTs", which measures the node's throughput with both); before
  then, 64-row statements had cut the INSERT by a third with no gain
  beyond the machine's noise.

So a group in steady state is a handful of statements: BEGIN IMMEDIATE,
PRAGMA data_version, the INSERTs, the UPDATE of the heads, COMMIT.

What it must never do: run on the event loop's thread or on two threads;
return acks for a group whose COMMIT did not succeed; update what it
remembers before the COMMIT succeeded; trust what it remembers after
another connection wrote; store a (room, sender, txn) twice or give two
messages of a room the same seq.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import time
from collections.abc import Sequence

from curvechat.store.base import Committed, NewMessage, NoSuchRoom
from curvechat.store.committer import Outcome

__all__ = ["KEYS_MAX", "SUSPECT_MS", "GroupAppender"]

#: Idempotency keys remembered (about 300 bytes each).
KEYS_MAX = 10_000
#: How long a sender whose old key made a group roll back is looked up first.
SUSPECT_MS = 60_000
#: Such senders remembered at most (the oldest is forgotten first).
SUSPECTS_MAX = 1_000
_IN_CHUNK = 300  # keys or rooms per lookup query (3 variables per key)

_Key = tuple[str, str, str]  # (room, sender, txn)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clock_ms() -> int:
    """For how long a sender stays suspect: a clock no one can set back."""
    return int(time.monotonic() * 1000)


_ROWS_MAX = 256  # rows per INSERT at most: 1,536 variables (6 a row)
_HEADS = "UPDATE rooms SET head = ? WHERE room = ?"


@functools.lru_cache(maxsize=16)
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO messages (room, seq, ts_ms, sender, txn, envelope) VALUES {values}"


@functools.lru_cache(maxsize=64)
def _rooms_sql(rooms: int) -> str:
    marks = ", ".join("?" * rooms)
    return (
        "SELECT r.room, r.head, r.epoch, r.op_head,"
        " (SELECT m.ts_ms FROM messages m WHERE m.room = r.room AND m.seq = r.head)"
        f" FROM rooms r WHERE r.room IN ({marks})"
    )


@functools.lru_cache(maxsize=64)
def _keys_sql(keys: int) -> str:
    values = ", ".join(["(?, ?, ?)"] * keys)
    # CROSS JOIN keeps the keys as the outer loop: one index search per key.
    return (
        f"WITH k(room, sender, txn) AS (VALUES {values})"
        " SELECT m.room, m.sender, m.txn, m.seq, m.ts_ms FROM k CROSS JOIN messages m"
        " ON m.room = k.room AND m.sender = k.sender AND m.txn = k.txn"
    )


class GroupAppender:
    """Appends groups on one connection (see the module docstring).

    Counters, for diagnostics: `groups`, `statements` (sqlite3 statements
    executed for them), `retries` (groups planned again from the file after
    a constraint fired), `seconds` (time spent in `append`).
    """

    def __init__(self, conn: sqlite3.Connection, *, keys_max: int = KEYS_MAX) -> None:
        self._conn = conn
        self._keys_max = keys_max
        self._rows_max = 0  # rows per INSERT, asked of the connection on its thread
        # room -> [head seq, ts of the head message, epoch, op_head]
        self._rooms: dict[str, list[int]] = {}
        self._keys: dict[_Key, tuple[int, int]] = {}  # oldest first
        # sender -> until when its keys are looked up before the insert (oldest first)
        self._suspects: dict[str, int] = {}
        self._data_version = -1
        self.groups = 0
        self.statements = 0
        self.retries = 0
        self.seconds = 0.0

    def forget(self, room: str) -> None:
        """The store changed the room's row (membership, epoch): read it again."""
        self._rooms.pop(room, None)

    def append(self, batches: Sequence[Sequence[NewMessage]]) -> tuple[list[Outcome], int]:
        """Store the batches in one transaction: one outcome per batch (its
        acks, or NoSuchRoom: then nothing of that batch is written) and the
        number of messages newly stored. sqlite3 errors propagate (nothing
        of the group was stored)."""
        t0 = time.perf_counter()
        try:
            try:
                return self._attempt(batches, lookup=False)
            except sqlite3.IntegrityError:
                self.retries += 1
                return self._attempt(batches, lookup=True)
        finally:
            self.groups += 1
            self.seconds += time.perf_counter() - t0

    # --- one transaction --------------------------------------------------------
    def _exec(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        self.statements += 1
        return self._conn.execute(sql, params)

    def _attempt(
        self, batches: Sequence[Sequence[NewMessage]], *, lookup: bool
    ) -> tuple[list[Outcome], int]:
        self._exec("BEGIN IMMEDIATE")
        try:
            version = int(self._exec("PRAGMA data_version").fetchone()[0])
            if version != self._data_version or lookup:
                # Another connection committed since our last group (or this
                # is the first, or a retry): read the rooms from the file.
                self._rooms.clear()
                if version != self._data_version:
                    self._keys.clear()
                self._data_version = version
            known = self._lookup(batches) if lookup else {}
            old = [k for k in known if k not in self._keys]  # what made the insert fail
            earlier = self._predecessors(batches, known)
            if not lookup:
                earlier += self._suspected(batches)
            if earlier:
                known.update(self._lookup_keys(earlier))
            outcomes, rows, heads, seen = self._plan(batches, known)
            if rows:
                self._insert(rows)
                self.statements += 1
                self._conn.executemany(_HEADS, [(h, r) for r, (h, _) in heads.items()])
            self._exec("COMMIT")
        except BaseException:
            # Whatever happened, take nothing remembered for granted next time.
            self._rooms.clear()
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise
        for room, (head, ts) in heads.items():
            state = self._rooms[room]
            state[0], state[1] = head, ts
        self._suspect(old)
        self._remember(seen)
        return outcomes, len(rows)

    def _insert(self, rows: list[tuple[object, ...]]) -> None:
        """The rows, in multi-row INSERTs of a power of two rows each (at
        most `_ROWS_MAX`, so each statement is prepared once and cached):
        a statement is one step, and the GIL is given up and taken back
        once per statement, not once per row."""
        if not self._rows_max:
            # A power of two within this SQLite's bound on variables (999 in
            # builds before 3.32 and some since).
            fit = min(_ROWS_MAX, self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 6)
            self._rows_max = 1 << (max(1, fit).bit_length() - 1)
        i = 0
        while i < len(rows):
            n = min(self._rows_max, 1 << ((len(rows) - i).bit_length() - 1))
            self._exec(_insert_sql(n), [v for row in rows[i : i + n] for v in row])
            i += n

    def _plan(
        self, batches: Sequence[Sequence[NewMessage]], known: dict[_Key, tuple[int, int]]
    ) -> tuple[
        list[Outcome],
        list[tuple[object, ...]],
        dict[str, tuple[int, int]],
        dict[_Key, tuple[int, int]],
    ]:
        """Seqs, acks and rows for the group, from the rooms and keys in memory."""
        rooms = self._rooms
        wanted = [r for r in dict.fromkeys(m.room for b in batches for m in b) if r not in rooms]
        if wanted:
            self._load_rooms(wanted)
        now = _now_ms()
        heads: dict[str, tuple[int, int]] = {}  # room -> (head, ts) after this group
        seen: dict[_Key, tuple[int, int]] = {}  # keys stored or found by this group
        rows: list[tuple[object, ...]] = []
        outcomes: list[Outcome] = []
        for batch in batches:
            missing = next((m.room for m in batch if m.room not in rooms), None)
            if missing is not None:
                outcomes.append(NoSuchRoom(missing))
                continue
            acks: list[Committed] = []
            for m in batch:
                key = (m.room, m.sender, m.txn)
                original = seen.get(key) or known.get(key) or self._keys.get(key)
                if original is not None:
                    seen[key] = original
                    acks.append(Committed(m.room, m.txn, original[0], original[1], True))
                    continue
                if m.after is not None:
                    prev = (m.room, m.sender, m.after)
                    if prev not in seen and prev not in known and prev not in self._keys:
                        acks.append(Committed(m.room, m.txn, 0, 0, False, behind=True))
                        continue
                state = rooms[m.room]
                if m.expect is not None and tuple(m.expect) != (state[2], state[3]):
                    acks.append(Committed(m.room, m.txn, 0, 0, False, stale=True))
                    continue
                head, last_ts = heads.get(m.room) or (state[0], state[1])
                seq, ts = head + 1, max(now, last_ts)  # ts never goes back with the clock
                heads[m.room] = (seq, ts)
                seen[key] = (seq, ts)
                rows.append((m.room, seq, ts, m.sender, m.txn, m.envelope))
                acks.append(Committed(m.room, m.txn, seq, ts, False))
            outcomes.append(acks)
        return outcomes, rows, heads, seen

    def _load_rooms(self, names: list[str]) -> None:
        for i in range(0, len(names), _IN_CHUNK):
            part = names[i : i + _IN_CHUNK]
            for room, head, epoch, op_head, ts in self._exec(_rooms_sql(len(part)), part):
                self._rooms[room] = [int(head), int(ts or 0), int(epoch), int(op_head)]

    def _lookup(self, batches: Sequence[Sequence[NewMessage]]) -> dict[_Key, tuple[int, int]]:
        """The group's keys that are already stored, with their (seq, ts)."""
        return self._lookup_keys(
            list(dict.fromkeys((m.room, m.sender, m.txn) for b in batches for m in b))
        )

    def _predecessors(
        self, batches: Sequence[Sequence[NewMessage]], known: dict[_Key, tuple[int, int]]
    ) -> list[_Key]:
        """The `after` keys to look up in the file: those neither remembered
        nor named by the group itself (in steady state, none)."""
        wanted = [
            k
            for k in dict.fromkeys(
                (m.room, m.sender, m.after) for b in batches for m in b if m.after is not None
            )
            if k not in known and k not in self._keys
        ]
        if not wanted:
            return []
        own = {(m.room, m.sender, m.txn) for b in batches for m in b}
        return [k for k in wanted if k not in own]

    def _suspected(self, batches: Sequence[Sequence[NewMessage]]) -> list[_Key]:
        """The group's keys, not remembered, of senders whose old keys made
        an earlier group roll back (in steady state, none)."""
        if not self._suspects:
            return []
        now = _clock_ms()
        while self._suspects:  # expired ones leave, oldest first
            sender, until = next(iter(self._suspects.items()))
            if until > now:
                break
            del self._suspects[sender]
        suspects = self._suspects
        return [
            k
            for k in dict.fromkeys(
                (m.room, m.sender, m.txn) for b in batches for m in b if m.sender in suspects
            )
            if k not in self._keys
        ]

    def _suspect(self, old: list[_Key]) -> None:
        """After a retry: the senders of the group's keys that were stored
        but not remembered (their inserts made the first attempt fail)."""
        if not old:
            return
        until = _clock_ms() + SUSPECT_MS
        for _room, sender, _txn in old:
            self._suspects.pop(sender, None)
            self._suspects[sender] = until
        over = len(self._suspects) - SUSPECTS_MAX
        if over > 0:
            for sender in list(itertools.islice(self._suspects, over)):
                del self._suspects[sender]

    def _lookup_keys(self, keys: list[_Key]) -> dict[_Key, tuple[int, int]]:
        """Those of `keys` that are stored, with their (seq, ts)."""
        found: dict[_Key, tuple[int, int]] = {}
        for i in range(0, len(keys), _IN_CHUNK):
            part = keys[i : i + _IN_CHUNK]
            params = [v for key in part for v in key]
            for room, sender, txn, seq, ts in self._exec(_keys_sql(len(part)), params):
                found[(room, sender, txn)] = (int(seq), int(ts))
        return found

    def _remember(self, seen: dict[_Key, tuple[int, int]]) -> None:
        keys = self._keys
        keys.update(seen)
        over = len(keys) - self._keys_max
        if over > 0:
            for key in list(itertools.islice(keys, over)):
                del keys[key]
