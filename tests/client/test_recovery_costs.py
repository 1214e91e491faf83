"""What a row that did not open counts, keeps and costs (client/recovery.py,
recover.py, messagerows.py, unopenedrows.py): it is not unread until it
opens, it keeps its envelope only if a key or an op may still open it, an
envelope that no longer decodes is dropped rather than tried for ever, the
queries that pick rows never scan a room's rows nor read more of them as
there are more, a room hidden by a listing keeps what its passes did, and
the passes of one sync share one deadline. Same stand-ins as
test_recovery.py: real keys, real envelopes, a node that answers from
lists."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from curvechat.client import recover as recover_mod
from curvechat.client.errors import RequestTimeout
from curvechat.client.messagerows import Tx
from curvechat.client.recovery import REOPEN_PER_PASS
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.protocol import messages as m

from .test_recovery import Room, _connected, _fields, forged, w
from .test_recovery_passes import _pass, count_opened

__all__ = ["w"]


def sent_by(w: Room, name: str, seq: int, text: str, epoch: int = 0) -> m.StoredMessage:
    """A message of `name` (who may not be in the room's log) under `epoch`."""
    who = w.ids.setdefault(name, Identity.generate(name))
    w.n += 1
    env = seal_message(
        who,
        room="r",
        epoch=epoch,
        key=w.keys[epoch].key,
        txn=f"txn{w.n:08d}BBBBBBBBBB",
        plaintext=Plaintext(text=text, ts=int(time.time() * 1000)),
    )
    return m.StoredMessage(seq=seq, ts=1000 + seq, envelope=env)


def op(w: Room, kind: str, target: str) -> None:
    """Bob signs one more op of the room's log, which the node then serves."""
    state = MemberState.empty("r")
    for signed in w.node.ops:
        state, _ = state.apply(signed)
    who = w.ids.setdefault(target, Identity.generate(target))
    nxt = state.next_op(kind, "bob", target, who.sign_pub, 1)  # type: ignore[arg-type]
    w.node.ops.append(sign_op(w.ids["bob"], nxt))


def kept(w: Room, seq: int) -> tuple[str | None, bool]:
    """The rule of the row at `seq`, and whether it keeps an envelope."""
    row = w.cache._db.execute(
        "SELECT rule, envelope IS NOT NULL FROM messages WHERE room='r' AND seq=?", (seq,)
    ).fetchone()
    return row[0], bool(row[1])


def unread(w: Room) -> int:
    return w.cache.room("r").unread  # type: ignore[union-attr]


def info(w: Room) -> m.RoomInfo:
    return m.RoomInfo(room="r", head=0, epoch=0, op_head=len(w.node.ops) - 1, members=2)


# --- unread ---------------------------------------------------------------------------------------


async def test_a_message_that_did_not_open_counts_as_unread_once_when_it_opens(w: Room) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    genuine = w.message(1, "from bob")
    await w.sync.ingest_page("r", [forged(genuine)], live=True)
    await w.sync.ingest_page("r", [w.message(2, "under a key held back", epoch=1)], live=True)
    assert [r[1] for r in w.rows()] == [None, None]
    assert unread(w) == 0  # nothing the user can read yet
    w.node.withheld = set()
    w.node.serve = {1: genuine}
    await _connected(w)
    assert [r[1] for r in w.rows()] == ["from bob", "under a key held back"]
    assert unread(w) == 2  # one each, not two each


# --- what is kept ---------------------------------------------------------------------------------


async def test_only_a_row_a_key_or_an_op_may_open_keeps_its_envelope(w: Room) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    other = w.message(2, "of another room")
    elsewhere = m.StoredMessage(
        seq=2, ts=2, envelope=m.Envelope(**{**_fields(other.envelope), "room": "x"})
    )
    waiting = forged(w.message(4, "forged, under a key held back", epoch=1))
    await w.sync.ingest_page(
        "r",
        [forged(w.message(1, "forged")), elsewhere, sent_by(w, "carol", 3, "not in the log")],
        live=False,
    )
    await w.sync.ingest_page("r", [waiting], live=False)
    assert [kept(w, s) for s in (1, 2, 3, 4)] == [
        ("M5", False),  # refused for good: asked for again by seq only
        ("M1", False),
        ("M3", True),  # an op may still let it in
        ("M2", True),  # a key may still open it
    ]
    w.node.withheld = set()
    await _pass(w)  # the key comes: opened again, the signature fails (M5)
    assert kept(w, 4) == ("M5", False)


async def test_an_envelope_that_no_longer_decodes_is_dropped_not_tried_for_ever(w: Room) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    broken = [w.message(s, f"w{s}", epoch=1) for s in range(1, REOPEN_PER_PASS + 1)]
    await w.sync.ingest_page("r", broken, live=False)
    late = REOPEN_PER_PASS + 1
    await w.sync.ingest_page("r", [sent_by(w, "carol", late, "from carol")], live=False)
    assert kept(w, late) == ("M3", True)
    # The kept envelopes of the M2 rows no longer decode (a damaged cache, or
    # one written by another version).
    w.cache._db.execute("UPDATE messages SET envelope=x'00' WHERE room='r' AND rule='M2'")
    op(w, "add", "carol")  # carol joins: her message may open now
    w.node.withheld = set()  # and the key of epoch 1 comes
    for _ in range(3):
        await _pass(w)
    assert (late, "from carol") in w.shown()
    assert all(kept(w, s) == ("M2", False) for s in range(1, late))  # asked for again only
    assert w.cache.waiting_for_keys("r", [0, 1], REOPEN_PER_PASS) == {}


# --- what a pick costs ----------------------------------------------------------------------------


def plans(w: Room, pick: Callable[[], Any]) -> list[str]:
    """The query plans of the statements `pick` runs."""
    statements: list[str] = []
    db = w.cache._db
    db.set_trace_callback(statements.append)
    try:
        pick()
    finally:
        db.set_trace_callback(None)
    assert statements
    return [str(row[3]) for sql in statements for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]


def steps(w: Room, pick: Callable[[], Any]) -> int:
    """How many SQLite instructions `pick` runs (by hundreds)."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    w.cache._db.set_progress_handler(tick, 100)
    try:
        pick()
    finally:
        w.cache._db.set_progress_handler(None, 0)
    return count[0] * 100


def stuck_rows(w: Room, seqs: range) -> None:
    """Rows that did not open, as many as a server may make: M2 to M5 in
    turn, under 7 epochs in turn."""
    with Tx(w.cache._db):
        w.cache._db.executemany(
            "INSERT INTO messages (room, seq, ts_ms, sender, txn, error, epoch, envelope, rule)"
            " VALUES ('r', ?, 1, 'mallory', ?, 'refused', ?, x'00', ?)",
            [(s, f"t{s}", s % 7, ("M2", "M3", "M4", "M5")[s % 4]) for s in seqs],
        )


def test_rows_waiting_for_a_key_or_an_op_are_picked_without_a_sort_or_a_scan(w: Room) -> None:
    w.cache.ensure_room("r")
    stuck_rows(w, range(1, 4001))
    by_log = plans(w, lambda: w.cache.waiting_for_log("r", 100, 50))
    assert all(p.startswith("SEARCH ") for p in by_log), by_log  # no full scan
    assert not any("TEMP B-TREE" in p for p in by_log), by_log  # no sort
    by_key = plans(w, lambda: w.cache.waiting_for_keys("r", list(range(7)), 50))
    assert all(p.startswith("SEARCH ") or "TEMP B-TREE" in p for p in by_key), by_key
    assert (
        list(w.cache.waiting_for_log("r", 100, 50))
        == [s for s in range(101, 200) if s % 4 in (1, 2)][:50]
    )
    assert (
        list(w.cache.waiting_for_keys("r", [2, 5], 50))
        == [s for s in range(1, 2000) if s % 4 == 0 and s % 7 in (2, 5)][:50]
    )
    # What a pick reads is bounded by what it picks, not by the rows there
    # are: ten times as many cost no more (each epoch's rows come in seq
    # order, so the merge of the epochs stops early).
    picks = (
        lambda: w.cache.waiting_for_log("r", 100, 50),
        lambda: w.cache.waiting_for_keys("r", list(range(7)), 50),
    )
    before = [steps(w, pick) for pick in picks]
    stuck_rows(w, range(4001, 40001))
    after = [steps(w, pick) for pick in picks]
    assert all(a <= b * 1.2 for a, b in zip(after, before, strict=True)), (before, after)


# --- what passes remember -------------------------------------------------------------------------


async def test_a_room_hidden_by_one_listing_does_not_have_every_row_opened_again(w: Room) -> None:
    await _connected(w)
    await w.sync.ingest_page(
        "r", [sent_by(w, "mallory", s, f"m{s}") for s in range(1, 41)], live=False
    )
    assert kept(w, 1) == ("M3", True)
    await _connected(w)  # refused under this log: not opened again in a new round
    opened = count_opened(w)
    w.core.listing([])  # a listing leaves the room out: hidden, not left
    async with w.sync.p.lock:
        await w.sync.recover.rooms()  # the end of that sync
    w.core.listing([info(w)])  # listed again
    assert not w.cache.room("r").left  # type: ignore[union-attr]
    await _connected(w)
    assert sum(opened) == 0  # the same log: nothing opened again


async def test_passes_forget_a_room_the_verified_log_says_the_user_left(w: Room) -> None:
    await _connected(w)
    await w.sync.ingest_page("r", [forged(w.message(1, "m1"))], live=False)
    assert "'r'" in repr(w.sync.recover.plan)
    op(w, "remove", "alice")
    await _connected(w)
    assert w.cache.room("r").left  # type: ignore[union-attr]
    assert "'r'" not in repr(w.sync.recover.plan)


# --- how long a sync asks -------------------------------------------------------------------------


async def test_the_passes_of_one_sync_share_one_deadline(
    w: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that makes every page of a sync need a refresh (a new key each
    time) and answers slowly: the passes those refreshes start ask within
    one deadline all together, not one each."""
    await _connected(w)
    await w.sync.ingest_page("r", [forged(w.message(s, f"m{s}")) for s in (1, 2, 3)], live=False)
    for epoch in (1, 2, 3):
        w.epoch(epoch)
    w.node.withheld = {2, 3}
    pages = [[w.message(3 + e, f"under epoch {e}", epoch=e)] for e in (1, 2, 3)]
    node = w.node
    request = node.request
    asked: list[float | None] = []  # the timeout of each history request

    async def slow(req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply:
        if isinstance(req, m.ListRooms):
            return m.RoomList(rooms=[info(w)])
        if isinstance(req, m.Lookup):
            return m.Directory(users=[])
        if isinstance(req, m.Sync):
            page = pages.pop(0) if pages else []
            reply = m.Messages(room="r", items=page, head=6)
            return m.SyncReply(rooms=[reply], more=bool(pages))
        if isinstance(req, m.History):
            node.withheld = {e for e in node.withheld if e != min(node.withheld, default=0)}
            asked.append(timeout)
            wait = 0.6 if timeout is None else min(0.6, timeout)
            await asyncio.sleep(wait)
            if wait < 0.6:
                raise RequestTimeout("no answer in time")
        return await request(req, timeout)

    node.request = slow  # type: ignore[method-assign]
    monkeypatch.setattr(recover_mod, "REFETCH_SECONDS", 1.0)
    async with w.sync.p.lock:
        w.sync.recover.new_round()
        await w.sync.full()
    assert [r[1] for r in w.rows()][3:] == ["under epoch 1", "under epoch 2", "under epoch 3"]
    # One deadline for the whole sync: the first answer (0.6 s) leaves less
    # than an answer's time to the next ask, and none to a third; with a
    # deadline per pass each of the three would be given a whole second.
    assert 1 <= len(asked) <= 2
    assert all(t is not None and t <= 1.0 for t in asked)
    assert asked[1:] == [] or (asked[1] is not None and asked[1] < 0.6)


async def test_a_reply_cut_short_by_the_nodes_size_budget_is_asked_on_from_its_end(
    w: Room,
) -> None:
    """The node cuts a `history` reply at its byte budget: the rest of the
    span is asked for next, not left until the rows' next turn."""
    await _connected(w)
    genuine = [w.message(s, f"m{s}") for s in range(1, 11)]
    await w.sync.ingest_page("r", [forged(g) for g in genuine], live=False)
    w.node.serve = {g.seq: g for g in genuine}
    request = w.node.request

    async def cut(req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply:
        reply = await request(req, timeout)
        if isinstance(req, m.History) and isinstance(reply, m.Messages):
            return m.Messages(room=reply.room, items=reply.items[:4], head=reply.head)
        return reply

    w.node.request = cut  # type: ignore[method-assign]
    async with w.sync.p.lock:
        w.sync.recover.new_round()
        await w.sync.recover.rooms()
    assert [text for _, text, _ in w.rows()] == [f"m{s}" for s in range(1, 11)]
    assert [(a.after, a.limit) for a in w.node.asked] == [(0, 10), (4, 6), (8, 2)]
