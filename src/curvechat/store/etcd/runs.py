"""Message runs: how the etcd store keeps a room's messages.

A transaction that commits messages writes them as runs: per room, the
messages it gives consecutive seqs, cut where the origin changes (the node
that committed them) and at RUN_BYTES of envelopes, one
``m/<room>/<last seq>`` key a run (`records.Run`). A put a run instead of
one a message is about a quarter less of etcd's CPU a message in a group
commit (docs/performance.md). The idempotency keys stay one a message, so
that a resend through any node finds its original.

Reading: keys sort as numbers, so the run that holds seq ``n`` is the first
key at or after ``m/<room>/<n>``. A run never changes once written and
only the room's head moves on, so a read in several round trips sees one
history. A value written before runs (a `records.Msg` a key) reads as a run
of one.

A node from before runs cannot read one: while such a node is in the
cluster's registry, the store writes a `records.Msg` a key instead
(`legacy`; server/cluster.py sets `EtcdStore.message_runs`).

What it must never do: write a run under a key other than its last seq,
put two origins or two rooms in one run, return a message outside the
seqs asked for, or fail a read for a run it cannot decode (it is left out
and logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.protocol.errors import UNDECODABLE
from curvechat.store.base import StoredRow
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.keys import prefix_end, tail

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdStore

FIRST_KEYS = 16  # the runs a history read asks for in its first round trip
RUN_BYTES = 64 * 1024  # a run's envelopes, at most (but a run of one): what a read may get too many
_DESCEND = rpc.RangeRequest.SortOrder.DESCEND
_BY_KEY = rpc.RangeRequest.SortTarget.KEY


@dataclass(slots=True)
class _Run:
    room: str
    first: int
    origin: str
    msgs: list[tuple[int, str, str, bytes]]
    size: int = 0  # of the envelopes


class RunBuilder:
    """The runs of one transaction being built (`add` each message in its
    room's seq order, then `write` them); with `legacy`, a message a key,
    as stores before runs wrote them."""

    __slots__ = ("_legacy", "_open", "_runs")

    def __init__(self, legacy: bool = False) -> None:
        self._legacy = legacy
        self._runs: list[_Run] = []
        self._open: dict[str, _Run] = {}  # room -> the run its next message may join

    def __len__(self) -> int:
        return len(self._runs)

    def opens(self, room: str, origin: str, size: int) -> bool:
        """Whether a message of `room` from `origin` with an envelope of
        `size` bytes would start a run (a put)."""
        run = self._open.get(room)
        return self._legacy or run is None or run.origin != origin or run.size + size > RUN_BYTES

    def add(
        self, room: str, seq: int, origin: str, ts_ms: int, sender: str, txn: str, envelope: bytes
    ) -> None:
        run = self._open.get(room)
        if (
            run is None
            or self.opens(room, origin, len(envelope))
            or run.first + len(run.msgs) != seq
        ):
            run = self._open[room] = _Run(room, seq, origin, [])
            self._runs.append(run)
        run.msgs.append((ts_ms, sender, txn, envelope))
        run.size += len(envelope)

    def mark(self) -> list[int]:
        """What `undo` goes back to."""
        return [len(run.msgs) for run in self._runs]

    def undo(self, mark: list[int]) -> None:
        """Forget every message added since `mark`."""
        del self._runs[len(mark) :]
        for run, n in zip(self._runs, mark, strict=True):
            del run.msgs[n:]
            run.size = sum(len(m[3]) for m in run.msgs)
        self._open = {run.room: run for run in self._runs}

    def write(self, st: EtcdStore, writes: Any) -> None:
        """One put a run into `writes` (a TxnRequest's `success`)."""
        for run in self._runs:
            if self._legacy:
                ((ts_ms, sender, txn, envelope),) = run.msgs
                value = rec.enc.encode(rec.Msg(ts_ms, sender, txn, envelope, run.origin))
            else:
                value = rec.enc.encode(rec.Run(run.first, run.msgs, run.origin))
            st.add_put(writes, st.k_msg(run.room, run.first + len(run.msgs) - 1), value)


def decode_run(room: str, last: int, value: bytes) -> tuple[list[StoredRow], str]:
    """The messages of the run stored under seq `last`, and its origin."""
    try:
        run = rec.run_dec.decode(value)
    except msgspec.ValidationError:
        m = rec.msg_dec.decode(value)  # one message, as stored before runs
        return [StoredRow(room, last, m.ts_ms, m.sender, m.txn, m.envelope)], m.origin
    first = run.first
    if not run.msgs or first + len(run.msgs) - 1 != last:
        raise msgspec.ValidationError(f"the run under seq {last} holds {first}+{len(run.msgs)}")
    return [
        StoredRow(room, first + i, ts, sender, txn, envelope)
        for i, (ts, sender, txn, envelope) in enumerate(run.msgs)
    ], run.origin


log = logging.getLogger("curvechat.store")


def _readable(room: str, kv: Any) -> list[StoredRow]:
    """The messages of the run `kv` of `room`; none, logged, if its value
    cannot be decoded (a damaged store, or a writer of another format):
    the read goes on past it, so that the rest of the room stays readable
    (its clients record the seqs as withheld; the watch skips it the same
    way)."""
    last = int(tail(kv.key))
    try:
        return decode_run(room, last, kv.value)[0]
    except UNDECODABLE as exc:
        log.error("the message run of %r under seq %d cannot be read: %s", room, last, exc)
        return []


def _more(wanted: int, rows: int, keys: int) -> int:
    """How many runs to ask for next: enough for `wanted` more messages at
    the rows per run read so far, and one more (never more than `wanted`:
    a run holds at least one)."""
    per = max(1, rows // max(1, keys))
    return min(wanted, -(-wanted // per) + 1)


async def read_from(
    st: EtcdStore,
    room: str,
    lo: int,
    before: int | None,
    limit: int,
    max_bytes: int | None = None,
) -> list[StoredRow]:
    """Up to `limit` messages of `room` from seq `lo` on and below `before`
    (if given), oldest first, up to the first whose envelope takes them past
    `max_bytes` (if given); NoSuchRoom if there is no such room."""
    sub = st.k_msgs(room)
    end = prefix_end(sub) if before is None else st.k_msg(room, before)
    rows: list[StoredRow] = []
    seen = runs = size = 0
    budget = max_bytes if max_bytes is not None else -1

    def take(kvs: list[Any]) -> bool:
        """Add the rows of `kvs` wanted; whether the read is done."""
        nonlocal seen, runs, size
        for kv in kvs:
            got = _readable(room, kv)
            seen, runs = seen + len(got), runs + 1
            for row in got:
                if before is not None and row.seq >= before:
                    return True
                if row.seq >= lo:
                    rows.append(row)
                    size += len(row.envelope)
                    if len(rows) == limit or size > budget >= 0:
                        return True
        return False

    keys = min(limit, FIRST_KEYS)
    (kvs,) = await st._room_read(
        room, rpc.RangeRequest(key=st.k_msg(room, lo), range_end=end, limit=keys)
    )
    while not take(kvs):
        if len(kvs) < keys:
            if before is not None:
                # The run that holds `before` - 1 may end at `before` or after it.
                across = rpc.RangeRequest(key=end, range_end=prefix_end(sub), limit=1)
                (kvs,) = await st._read_txn([across])
                take(kvs)
            break
        keys = _more(limit - len(rows), seen, runs)
        req = rpc.RangeRequest(key=bytes(kvs[-1].key) + b"\0", range_end=end, limit=keys)
        (kvs,) = await st._read_txn([req])
    return rows


async def read_newest(
    st: EtcdStore, room: str, before: int | None, limit: int, max_bytes: int | None = None
) -> list[StoredRow]:
    """The newest `limit` messages of `room` below `before` (if given),
    oldest first, down to the first whose envelope takes them past
    `max_bytes` (if given); NoSuchRoom if there is no such room."""
    sub = st.k_msgs(room)
    end = prefix_end(sub) if before is None else st.k_msg(room, before)
    newest: list[StoredRow] = []  # newest first
    seen = runs = size = 0
    budget = max_bytes if max_bytes is not None else -1
    keys = min(limit, FIRST_KEYS)
    req = rpc.RangeRequest(
        key=sub, range_end=end, limit=keys, sort_order=_DESCEND, sort_target=_BY_KEY
    )
    if before is None:
        (kvs,) = await st._room_read(room, req)
        got_runs = kvs
    else:
        # The run that holds `before` - 1 may end at `before` or after it.
        across = rpc.RangeRequest(key=end, range_end=prefix_end(sub), limit=1)
        straddle, kvs = await st._room_read(room, across, req)
        got_runs = straddle + kvs
    while True:
        for kv in got_runs:
            got = _readable(room, kv)
            seen, runs = seen + len(got), runs + 1
            for row in reversed(got):
                if before is not None and row.seq >= before:
                    continue
                newest.append(row)
                size += len(row.envelope)
                if len(newest) == limit or size > budget >= 0:
                    return newest[::-1]
        if len(kvs) < keys:
            return newest[::-1]
        keys = _more(limit - len(newest), seen, runs)
        req = rpc.RangeRequest(
            key=sub,
            range_end=bytes(kvs[-1].key),
            limit=keys,
            sort_order=_DESCEND,
            sort_target=_BY_KEY,
        )
        (kvs,) = await st._read_txn([req])
        got_runs = kvs
