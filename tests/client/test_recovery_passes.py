"""Passes over the rows that did not open, at scale and against a hostile
node or member (client/recovery.py, recover.py): a pass opens again only
the rows a change can unblock, asks first for the rows no key or op can
open, covers the seqs it asks for with few `history` requests within one
deadline, places a copy only where its epoch fits, and remembers a bounded
amount per room. Same stand-ins as test_recovery.py: real keys, real
envelopes, a node that answers from lists."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from curvechat.client import events as ev
from curvechat.client import recover as recover_mod
from curvechat.client.cache import Cache
from curvechat.client.crypt import open_split
from curvechat.client.recovery import REFETCH_PER_PASS, REFETCH_SPANS, Recovery
from curvechat.protocol import messages as m

from .test_recovery import Room, _connected, _fields, forged, w

__all__ = ["w"]


def count_opened(room: Room) -> list[int]:
    """How many envelopes each later `verify_many` call of the trust core is
    handed (each is a signature check, and a decryption if it verifies)."""
    calls: list[int] = []
    verify = room.core.verify_many

    def counting(r: str, envs: Sequence[m.Envelope], crypt: Any = open_split) -> Any:
        calls.append(len(envs))
        return verify(r, envs, crypt)

    room.core.verify_many = counting  # type: ignore[method-assign]
    return calls


def asked_seqs(room: Room) -> list[int]:
    return [s for q in room.node.asked for s in range(q.after + 1, q.after + 1 + q.limit)]


async def _pass(w: Room) -> None:
    """What a refresh does (a push of the room, a message under an epoch not
    held): the log and keys brought up to date, then a pass if one is due."""
    async with w.sync.p.lock:
        await w.sync.refresh("r")


# --- the decisions ---------------------------------------------------------------------------


def test_the_seqs_of_a_pass_are_covered_by_few_history_requests() -> None:
    plan = Recovery()
    plan.new_round()
    plan.begin("r", (0, 1))
    spread = [s for s in range(5000, 0, -7)][:REFETCH_PER_PASS]  # 64 seqs over 442
    (span,) = plan.pick_refetch("r", spread, [])
    assert (span.after, span.limit) == (min(spread) - 1, max(spread) - min(spread) + 1)
    assert span.seqs == frozenset(spread)
    far = [s * 1000 for s in range(60, 0, -1)]  # each needs a request of its own
    plan.new_round()
    plan.begin("r", (0, 1))
    spans = plan.pick_refetch("r", far, [])
    assert len(spans) == REFETCH_SPANS and all(span.limit == 1 for span in spans)
    assert plan.below("r")[0] == far[REFETCH_SPANS - 1]  # the next pass goes on from there


def test_the_passes_at_the_end_of_a_sync_start_from_the_next_room_each_round() -> None:
    plan = Recovery()
    rooms = ["a", "b", "c"]
    firsts = []
    for _ in range(4):
        plan.new_round()
        order = plan.in_turn(rooms)
        assert sorted(order) == rooms
        firsts.append(order[0])
    assert firsts == ["b", "c", "a", "b"]
    assert plan.in_turn([]) == []


# --- the cache ----------------------------------------------------------------------------------


OLD_MESSAGES = (
    "CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL,"
    " ts_ms INTEGER NOT NULL, sender TEXT NOT NULL, txn TEXT NOT NULL, sent_ms INTEGER,"
    " sealed BLOB, error TEXT, epoch INTEGER{}, PRIMARY KEY (room, seq));"
)

OLD_ERRORS = {
    1: ("no key for epoch 3 (M2)", "M2"),
    2: ("refused: requires that the sender is in the room's verified log (M3)", "M3"),
    3: ("failed to verify or decrypt: BadSignatureError", "M5"),
    4: ("replay of message 1", "M6"),
    5: ("no key", None),
}


@pytest.mark.parametrize("envelopes", [False, True])
def test_an_older_cache_is_brought_up_to_date(tmp_path: Path, envelopes: bool) -> None:
    """Schema 2 (no envelopes kept), or a schema 3 that kept envelopes but
    not the rule that refused each: the rule is read back from the error."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_MESSAGES.format(", envelope BLOB" if envelopes else ""))
    for seq, (error, _) in OLD_ERRORS.items():
        row = ("r", seq, 5, "bob", f"t{seq}", None, None, error, 3)
        kept = (b"sealed",) if envelopes and seq != 4 else (None,) if envelopes else ()
        db.execute(f"INSERT INTO messages VALUES ({', '.join('?' * len(row + kept))})", row + kept)
    db.execute(f"PRAGMA user_version={3 if envelopes else 2}")
    db.commit()
    db.close()
    cache = Cache(path, bytes(32))
    try:
        rules = dict(cache._db.execute("SELECT seq, rule FROM messages"))
        assert rules == {seq: rule for seq, (_, rule) in OLD_ERRORS.items()}
        waiting = cache.unopened("r", waits=True, below=None, limit=10)
        assert waiting == ([2, 1] if envelopes else [])  # an envelope that may open
        assert sorted(cache.unopened("r", waits=False, below=None, limit=10)) == (
            [3, 4, 5] if envelopes else [1, 2, 3, 4, 5]  # asked for again only
        )
        assert cache._db.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        cache.close()


# --- which rows a pass opens again, and which it asks for first -------------------------------


async def test_a_late_joiner_reopens_only_what_a_new_key_can_open_and_asks_for_forged_rows_first(
    w: Room,
) -> None:
    await _connected(w)
    # Three forged rows (M5), then 600 rows under an epoch whose key this
    # member never got (history from before they joined: M2, legitimately).
    fakes = [forged(w.message(s, f"m{s}")) for s in (1, 2, 3)]
    await w.sync.ingest_page("r", fakes, live=False)
    w.epoch(1)
    w.node.withheld = {1}
    waiting = [w.message(s, f"w{s}", epoch=1) for s in range(4, 604)]
    await w.sync.ingest_page("r", waiting, live=False)
    w.node.serve = {f.seq: f for f in fakes}
    opened = count_opened(w)
    w.node.asked.clear()
    w.epoch(2)  # a rotation: a key for epoch 2 arrives, none for epoch 1
    await _pass(w)
    # No row is under epoch 2: nothing is opened again; only the three
    # copies served for the forged rows, asked for first, are checked.
    assert {1, 2, 3} <= set(asked_seqs(w))
    assert sum(opened) == 3


async def test_garbage_a_member_stored_is_never_opened_again_on_a_new_epoch(w: Room) -> None:
    await _connected(w)
    count = 520  # more than a pass used to open again
    fakes = [forged(w.message(s, f"m{s}")) for s in range(1, count + 1)]
    await w.sync.ingest_page("r", fakes, live=False)
    w.node.serve = {f.seq: f for f in fakes}
    opened = count_opened(w)
    w.node.asked.clear()
    for epoch in (1, 2, 3):  # the member rotates, again and again
        w.epoch(epoch)
        await _pass(w)
    # Signatures that failed are never checked again on a change of keys:
    # only the copies asked for again are (at most 64 a pass, in one span).
    assert sum(opened) == len(asked_seqs(w)) <= 3 * 64
    assert len(w.node.asked) == 3


async def test_a_waiting_row_whose_key_arrives_opens_however_many_there_are(w: Room) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    count = 620  # more than one pass opens again
    items = [w.message(s, f"w{s}", epoch=1) for s in range(1, count + 1)]
    await w.sync.ingest_page("r", items, live=False)
    assert all(r[1] is None for r in w.rows())
    w.node.withheld = set()
    await _pass(w)  # the key arrives: a pass opens 500
    await _pass(w)  # the next refresh goes on with the rest
    assert all(r[1] is not None for r in w.rows())
    assert len(w.shown()) == count


async def test_rows_refused_for_good_are_never_opened_again(w: Room) -> None:
    await _connected(w)
    genuine = w.message(1, "once")
    elsewhere = w.message(2, "of another room")
    env = m.Envelope(**{**_fields(elsewhere.envelope), "room": "x"})
    await w.sync.ingest_page(
        "r", [forged(genuine), m.StoredMessage(seq=2, ts=2, envelope=env)], live=False
    )
    forged_row, other_room = [r[2] or "" for r in w.rows()]
    assert forged_row.startswith("failed to verify") and other_room.endswith("(M1)")
    opened = count_opened(w)
    w.epoch(1)
    await _pass(w)  # asked for again (no copy served): not opened again
    w.epoch(2)
    await _pass(w)
    assert sum(opened) == 0


# --- what a pass asks for, and for how long --------------------------------------------------


async def test_the_seqs_of_a_pass_are_asked_for_in_one_span(w: Room) -> None:
    await _connected(w)
    genuine = [w.message(s, f"m{s}") for s in range(1, 200)]
    every_third = [g if g.seq % 3 else forged(g) for g in genuine]
    await w.sync.ingest_page("r", every_third, live=False)
    w.node.serve = {g.seq: g for g in genuine}
    w.node.asked.clear()
    await _connected(w)
    assert len(w.node.asked) == 1  # 64 seqs spread over 190: one request, not 64
    assert sorted(s for s, _ in w.shown() if s % 3 == 0) == list(range(9, 199, 3))  # newest 64


async def test_a_node_that_answers_slowly_holds_a_pass_one_deadline_at_most(
    w: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _connected(w)
    # Forged rows far apart: each needs a request of its own.
    seqs = list(range(1, 64 * 600, 600))
    fakes = {s: forged(w.message(s, f"m{s}")) for s in seqs}
    for fake in fakes.values():
        await w.sync.ingest_page("r", [fake], live=False)
    w.node.serve = fakes
    request = w.node.request
    timeouts: list[float | None] = []

    async def slow(req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply:
        if isinstance(req, m.History):
            timeouts.append(timeout)
            await asyncio.sleep(0.05)  # just under the timeout, as far as the client knows
        return await request(req, timeout)

    w.node.request = slow  # type: ignore[method-assign]
    monkeypatch.setattr(recover_mod, "REFETCH_SECONDS", 0.12)
    await _connected(w)
    assert len(w.node.asked) <= 3  # then the pass stops asking
    assert all(t is not None and t <= 0.12 for t in timeouts)  # each ask within the deadline


# --- where a copy may go ---------------------------------------------------------------------


async def test_a_copy_whose_epoch_does_not_fit_between_its_neighbours_is_not_used(
    w: Room,
) -> None:
    await _connected(w)
    first = [w.message(1, "a"), w.message(2, "b"), w.message(3, "c")]
    await w.sync.ingest_page("r", [first[0], forged(first[1]), first[2]], live=False)
    w.epoch(1)
    later = w.message(2000, "sent much later, under epoch 1", epoch=1)
    after = w.message(2001, "and after it", epoch=1)
    await w.sync.ingest_page("r", [forged(later), after], live=False)  # garbage at 2000
    # Asked for seq 2 again, the node answers with the message of seq 2000.
    w.node.serve = {2: m.StoredMessage(seq=2, ts=5, envelope=later.envelope)}
    await _connected(w)
    assert next(r for r in w.rows() if r[0] == 2)[1] is None  # not placed at 2
    assert "sent much later, under epoch 1" not in [t for _, t in w.shown()]
    # At its own seq it fits: asked for 2000 again, it opens there.
    w.node.serve = {2000: later}
    await _connected(w)
    assert (2000, "sent much later, under epoch 1") in w.shown()


async def test_a_message_opened_later_from_someone_else_counts_as_unread(w: Room) -> None:
    await _connected(w)
    genuine = w.message(1, "from bob")
    await w.sync.ingest_page("r", [forged(genuine)], live=True)
    assert w.cache.room("r").unread == 0  # type: ignore[union-attr]  # nothing to read yet
    w.node.serve = {1: genuine}
    await _connected(w)
    assert w.rows() == [(1, "from bob", None)]
    assert w.cache.room("r").unread == 1  # type: ignore[union-attr]  # once, when it opens


# --- what a pass remembers -------------------------------------------------------------------


async def test_what_passes_remember_does_not_grow_with_the_rows_tried(w: Room) -> None:
    await _connected(w)
    fakes = [forged(w.message(s, f"m{s}")) for s in range(1, 1201)]
    await w.sync.ingest_page("r", fakes, live=False)
    for epoch in range(1, 9):
        w.epoch(epoch)
        await _pass(w)
    assert len(pickle.dumps(w.sync.recover.plan)) < 2000
    # (what it forgets: test_recovery_costs.py)


async def test_a_pass_never_reads_every_error_row_of_a_room(w: Room) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    await w.sync.ingest_page(
        "r", [w.message(s, f"w{s}", epoch=1) for s in range(1, 301)], live=False
    )
    statements: list[str] = []
    w.cache._db.set_trace_callback(statements.append)
    w.epoch(2)
    await _pass(w)
    w.cache._db.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "error" in s]
    assert reads and all(" LIMIT " in s.upper() or " IN (" in s.upper() for s in reads)


# --- the front end is told ---------------------------------------------------------------------


async def test_a_message_shown_that_becomes_a_replay_is_told_as_such(
    w: Room, tmp_path: Path
) -> None:
    await _connected(w)
    original = w.message(2, "once")
    copy = m.StoredMessage(seq=9, ts=9, envelope=original.envelope)
    await w.sync.ingest_page("r", [copy], live=True)  # the copy first, shown at 9
    await w.sync.ingest_page("r", [original], live=False)  # the original turns up at 2
    told = [e for e in w.events if type(e).__name__ == "ReplayMarked"]
    assert [(e.room, e.seq, e.original) for e in told] == [("r", 9, 2)]  # type: ignore[attr-defined]
    assert isinstance(w.events[-1], ev.MessageReceived)
