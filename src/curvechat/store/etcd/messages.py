"""Committing messages to etcd: the group commit's transactions.

Each group of caller batches becomes one etcd transaction (or several,
when it needs more than ``max_txn_ops`` operations) that writes every
message (in runs, runs.py) and its idempotency key, moves each room's head,
and is guarded by compare-and-swap on the ``mod_revision`` of each room's
head and meta.

Two ways to the same transaction:

* The fast path (one round trip): when this store remembers every room of
  the group from its own last commit (head, head and meta revisions, the
  meta's epoch and op head), it sends the transaction at once, with the
  checks it would otherwise read for folded into the transaction's
  compares: each message's idempotency key absent (``version == 0``),
  each ``after`` key from outside the group present (``version > 0``), each
  room's head and meta unchanged (the meta also of a room whose sends it
  answers ``stale`` by the remembered meta, without writing to it). A
  room's owner (server/ownership.py) commits this way almost always.
* The read path (three round trips): read the heads and metas, then the
  idempotency and ``after`` keys (readpath.py), then write with the heads'
  and metas' revisions compared; a lost compare is retried
  (``cas_retries``). Taken when a room is not remembered, when the fast
  transaction's compares fail (a duplicate, a missing predecessor, another
  writer, a membership change: it cannot tell which, and the read path
  sorts it out).

A group too big for one transaction is committed in several, each taking
the whole batches that fit; a batch too big for one transaction is
committed in parts, on either path, and answered when its last part
committed (a crash in between leaves its first parts stored, and the
client's resend finds them by their idempotency keys).

Both give the same answers (the store contract suite runs on both, and
tests/store/test_etcd.py compares them).

What it must never do: acknowledge a message before its transaction
committed, write a room's head without comparing it, or trust a remembered
room in a transaction that does not compare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import Committed, NewMessage, NoSuchRoom, StoreUnavailable
from curvechat.store.committer import Outcome
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.client import CAS_RETRIES, now_ms
from curvechat.store.etcd.readpath import read_rooms
from curvechat.store.etcd.runs import RunBuilder

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdStore

MAX_TXN_BYTES = 1024 * 1024  # below etcd's default --max-request-bytes (1.5 MiB)
MSG_OVERHEAD = 200  # bytes counted per message on top of its envelope (keys, ids)
ROOMS_REMEMBERED = 10_000


_EQUAL = rpc.Compare.CompareResult.EQUAL
_GREATER = rpc.Compare.CompareResult.GREATER


def _next_message(
    st: EtcdStore,
    m: NewMessage,
    ik: bytes,
    cur: list[int],
    now: int,
    writes: Any,
    runs: RunBuilder,
) -> Committed:
    """Store `m` at its room's next seq: `cur` is the room's [head, last_ts]
    in the transaction being built (moved on), the idempotency key's put
    goes to `writes` (the TxnRequest's `success`), the message to its run
    in `runs` (written with `runs.write` once the transaction is built)."""
    seq, ts = cur[0] + 1, max(now, cur[1])
    cur[0], cur[1] = seq, ts
    runs.add(m.room, seq, m.origin or st.origin, ts, m.sender, m.txn, m.envelope)
    st.add_put(writes, ik, rec.enc.encode((seq, ts)))
    return Committed(m.room, m.txn, seq, ts, False)


def _runs_needed(msgs: Sequence[NewMessage], legacy: bool) -> int:
    """At most how many runs `msgs` start: as many as on their own, and one
    more a room (its open run in the transaction may be cut elsewhere)."""
    runs = RunBuilder(legacy)
    seqs: dict[str, int] = {}
    for m in msgs:
        seq = seqs[m.room] = seqs.get(m.room, 0) + 1
        runs.add(m.room, seq, m.origin, 0, "", "", m.envelope)
    return len(runs) + len(seqs)


@dataclass(slots=True)
class _Room:
    """A room as this store's last commit (or read) left it."""

    head: int
    last_ts: int
    head_rev: int
    meta: tuple[int, int]  # (epoch, op_head)
    meta_rev: int


class MessageCommits:
    """The etcd store's `commit` function for its GroupCommitter."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self._rooms: dict[str, _Room] = {}
        self.fast = 0  # transactions committed on the fast path
        self.fast_missed = 0  # fast transactions whose compares failed

    def meta_written(self, room: str, was: int, meta: tuple[int, int], revision: int) -> None:
        """This store wrote `room`'s meta (a rotation or a membership change),
        moving it from revision `was` to `meta` at `revision`: a room
        remembered at `was` is remembered with it (its head did not move), so
        that its next sends need not fail a fast transaction, or be judged
        stale on the old meta, and go the read path."""
        known = self._rooms.get(room)
        if known is not None and known.meta_rev == was:
            known.meta, known.meta_rev = meta, revision

    def _remember(self, room: str, known: _Room) -> None:
        if room not in self._rooms and len(self._rooms) >= ROOMS_REMEMBERED:
            self._rooms.clear()
        self._rooms[room] = known

    async def _try_fast(
        self,
        batches: Sequence[Sequence[NewMessage]],
        start: int,
        outcomes: list[list[Committed] | NoSuchRoom | None],
    ) -> int | None:
        """Commit in one transaction, with its checks as compares, the longest
        run of whole batches from `start` that fits, or the next part of the
        batch at `start` when that one does not fit whole (its acks so far
        stay in `outcomes`, as on the read path). Returns how many batches it
        finished (0: a part), or None (nothing written) when the read path
        must take over from `start`."""
        st = self.store
        rooms = self._rooms
        limit = st.max_txn_ops
        state: dict[str, list[int]] = {}
        # The rooms whose remembered meta a `stale` answer relied on, and
        # every room the transaction compares (those and the ones written).
        judged: set[str] = set()
        touched: set[str] = set()
        assigned: dict[bytes, tuple[int, int]] = {}
        req = rpc.TxnRequest()
        compares, writes = req.compare, req.success
        runs = RunBuilder(not st.message_runs)
        size = 0
        now = now_ms()
        results: list[list[Committed]] = []
        part: list[Committed] | None = None
        for batch in batches[start:]:
            if any(m.room not in rooms for m in batch):
                break
            prior = outcomes[start] if not results else None
            acks: list[Committed] = list(prior) if isinstance(prior, list) else []
            # What the transaction holds before this batch, to leave it out
            # again if it does not fit whole (and is not the first).
            mark = (len(compares), len(writes), size, len(assigned), runs.mark())
            before = ({r: list(v) for r, v in state.items()}, set(judged), set(touched))
            full = False
            for m in batch[len(acks) :]:
                ik = st.k_idem(m.room, m.sender, m.txn)
                seen = assigned.get(ik)
                if seen is not None:  # the same send twice in one transaction
                    acks.append(Committed(m.room, m.txn, seen[0], seen[1], True))
                    continue
                ak = None if m.after is None else st.k_idem(m.room, m.sender, m.after)
                if ak in assigned:
                    ak = None
                # This message's compares and puts, and its room's, must fit.
                heads = len(touched) + (m.room not in touched)
                opens = runs.opens(m.room, m.origin or st.origin, len(m.envelope))
                if (
                    len(writes) + len(runs) + opens + 1 + heads > limit
                    or len(compares) + 1 + (ak is not None) + 2 * heads > limit
                    or (writes and size + len(m.envelope) + MSG_OVERHEAD > MAX_TXN_BYTES)
                ):
                    full = True
                    break
                # As on the read path: a missing predecessor (`behind`) wins
                # over a changed room (`stale`).
                if ak is not None:
                    st.add_version_is(compares, ak, 0, _GREATER)
                known = rooms[m.room]
                st.add_version_is(compares, ik, 0, _EQUAL)  # a resend: the read path
                touched.add(m.room)
                if m.expect is not None and tuple(m.expect) != known.meta:
                    # Judged on the remembered meta, which the transaction
                    # then compares: if it moved, the read path judges.
                    judged.add(m.room)
                    acks.append(Committed(m.room, m.txn, 0, 0, False, stale=True))
                    continue
                cur = state.get(m.room)
                if cur is None:
                    cur = state[m.room] = [known.head, known.last_ts]
                ack = _next_message(st, m, ik, cur, now, writes, runs)
                size += len(m.envelope) + MSG_OVERHEAD
                assigned[ik] = (ack.seq, ack.ts_ms)
                acks.append(ack)
            if full:
                if not results:
                    part = acks  # the first batch: this transaction takes a part
                else:
                    del compares[mark[0] :], writes[mark[1] :]
                    runs.undo(mark[4])
                    size = mark[2]
                    for key in list(assigned)[mark[3] :]:
                        del assigned[key]
                    state, judged, touched = before
                break
            results.append(acks)
        runs.write(st, writes)
        if not writes:
            return None  # nothing fits, or stale ones only: the read path decides
        for room, (head, last_ts) in state.items():
            known = rooms[room]
            st.add_mod_is(compares, st.k_head(room), known.head_rev)
            st.add_mod_is(compares, st.k_meta(room), known.meta_rev)
            st.add_put(writes, st.k_head(room), rec.enc.encode(rec.Head(head, last_ts)))
        for room in judged - state.keys():
            st.add_mod_is(compares, st.k_meta(room), rooms[room].meta_rev)
        resp = await st._send_txn(req)
        if not resp.succeeded:
            self.fast_missed += 1
            for room in touched:
                rooms.pop(room, None)
            return None
        self.fast += 1
        st.commits += 1
        st.committed_messages += len(assigned)
        revision = int(resp.header.revision)
        for room, (head, last_ts) in state.items():
            known = rooms[room]
            known.head, known.last_ts, known.head_rev = head, last_ts, revision
        for i, acks in enumerate(results):
            outcomes[start + i] = acks
        if part is not None:
            outcomes[start] = part
        return len(results)

    async def commit_group(self, batches: list[Sequence[NewMessage]]) -> list[Outcome]:
        """Commit the callers' batches, in transactions of at most max_txn_ops
        operations; returns one outcome per batch."""
        outcomes: list[list[Committed] | NoSuchRoom | None] = [None] * len(batches)
        start = 0
        while start < len(batches):
            done = await self._try_fast(batches, start, outcomes)
            if done is None:
                break
            start += done  # 0 when it committed a part of the batch at `start`
        todo = list(range(start, len(batches)))
        while todo:
            for _ in range(CAS_RETRIES):
                done = await self._try_slow(batches, todo, outcomes)
                if done is not None:
                    todo = todo[done:]
                    break
                self.store.cas_retries += 1
            else:
                raise StoreUnavailable("too much contention on the rooms' heads")
        return [o if o is not None else [] for o in outcomes]

    async def _try_slow(
        self,
        batches: Sequence[Sequence[NewMessage]],
        todo: list[int],
        outcomes: list[list[Committed] | NoSuchRoom | None],
    ) -> int | None:
        """Plan and commit one transaction from the batches in `todo` (in order,
        as many whole batches as fit; at least part of the first). Returns how
        many batches of `todo` it finished, or None when a head moved (retry).
        A batch too big for one transaction is committed in parts: its acks are
        kept in `outcomes` and it is finished when its last part committed."""
        st = self.store
        # Heads first, then idempotency keys (readpath.py).
        heads, metas, known = await read_rooms(st, batches, todo)
        now = now_ms()
        state: dict[str, list[int]] = {}
        req = rpc.TxnRequest()
        compares, writes = req.compare, req.success
        runs = RunBuilder(not st.message_runs)
        size = 0
        results: dict[int, list[Committed]] = {}
        finished = 0
        stored = 0
        partial = False
        for i in todo:
            batch = batches[i]
            prior = outcomes[i]
            acks: list[Committed] = list(prior) if isinstance(prior, list) else []
            missing = next((m.room for m in batch if heads.get(m.room) is None), None)
            if missing is not None:
                # Nothing of this batch is written (rooms are never deleted, so
                # a batch committed in parts fails, if ever, on its first part).
                outcomes[i] = NoSuchRoom(missing)
                finished += 1
                continue
            rest = batch[len(acks) :]
            new_rooms = {m.room for m in rest} - state.keys()
            need = len(rest) + _runs_needed(rest, not st.message_runs) + len(new_rooms)
            blob = sum(len(m.envelope) + MSG_OVERHEAD for m in rest)
            if writes and (
                len(writes) + len(runs) + len(state) + need > st.max_txn_ops
                or size + blob > MAX_TXN_BYTES
            ):
                break
            for m in batch[len(acks) :]:
                if m.room not in state:
                    entry = heads[m.room]
                    assert entry is not None
                    state[m.room] = [entry[0].head, entry[0].last_ts]
                # Room heads, runs and this message's puts must fit.
                opens = runs.opens(m.room, m.origin or st.origin, len(m.envelope))
                if len(writes) + len(runs) + opens + 1 + len(state) > st.max_txn_ops or (
                    writes and size + len(m.envelope) + MSG_OVERHEAD > MAX_TXN_BYTES
                ):
                    partial = True
                    break
                ik = st.k_idem(m.room, m.sender, m.txn)
                original = known.get(ik)
                if original is not None:
                    acks.append(Committed(m.room, m.txn, original[0], original[1], True))
                    continue
                if m.after is not None and st.k_idem(m.room, m.sender, m.after) not in known:
                    acks.append(Committed(m.room, m.txn, 0, 0, False, behind=True))
                    continue
                if m.expect is not None and tuple(m.expect) != metas[m.room][0]:
                    acks.append(Committed(m.room, m.txn, 0, 0, False, stale=True))
                    continue
                ack = _next_message(st, m, ik, state[m.room], now, writes, runs)
                size += len(m.envelope) + MSG_OVERHEAD
                stored += 1
                known[ik] = (ack.seq, ack.ts_ms)
                acks.append(ack)
            results[i] = acks
            if partial:
                break
            finished += 1
        runs.write(st, writes)
        if not writes and finished == 0:
            raise StoreUnavailable(
                f"one batch touches more rooms than fit in a transaction of {st.max_txn_ops} ops"
            )
        for room, (head, last_ts) in state.items():
            entry = heads[room]
            assert entry is not None
            st.add_mod_is(compares, st.k_head(room), entry[1])
            if entry[0].head != head:
                st.add_mod_is(compares, st.k_meta(room), metas[room][1])
                st.add_put(writes, st.k_head(room), rec.enc.encode(rec.Head(head, last_ts)))
        if writes:
            resp = await st._send_txn(req)
            if not resp.succeeded:
                for room in state:
                    self._rooms.pop(room, None)
                return None
            st.commits += 1
            st.committed_messages += stored
            revision = int(resp.header.revision)
            for room, (head, last_ts) in state.items():
                entry = heads[room]
                if entry is not None and entry[0].head != head:  # written just now
                    heads[room] = (rec.Head(head, last_ts), revision)
        # What was read (or just written) is what the next group may assume.
        for room, entry in heads.items():
            if entry is not None and room in metas:
                self._remember(room, _Room(entry[0].head, entry[0].last_ts, entry[1], *metas[room]))
        for i, acks in results.items():
            outcomes[i] = acks
        return finished
