"""Messages that did not open, tried again (client/recovery.py, recover.py,
messagerows.py): the decisions without I/O, then the cache and the engine's
sync with a real trust core, real keys and real envelopes, against a node
stand-in that answers from lists (no socket).

A row that did not open keeps its envelope, sealed at rest; it is opened
again when the room's log or keys change, and asked for again once a round
(a connection) and per such change, within caps; only such a row is ever
rewritten, and a copy that opens is shown once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.parts import Parts
from curvechat.client.recovery import (
    REFETCH_PER_PASS,
    REFETCH_PER_ROUND,
    Fate,
    Recovery,
    fits,
    placed,
    refetched,
    reopened,
)
from curvechat.client.sync import Sync
from curvechat.client.trust import Opened, TrustCore
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, wrap_epoch_key
from curvechat.protocol import encode
from curvechat.protocol import messages as m

# --- the decisions ---------------------------------------------------------------------------


def _opened(rule: str | None) -> Opened:
    if rule is None:
        return Opened("bob", "hi", 1, None)
    return Opened("bob", None, None, f"refused ({rule})", rule)


def test_a_pass_is_due_once_per_round_and_per_change_of_log_or_keys() -> None:
    plan = Recovery()
    plan.new_round()
    assert plan.begin("r", (3, 1))
    assert not plan.begin("r", (3, 1))  # the same round, nothing learned: no pass
    assert plan.begin("other", (3, 1))  # rooms apart
    assert plan.begin("r", (3, 2))  # a key learned
    assert plan.begin("r", (4, 2))  # an op learned
    assert not plan.begin("r", (4, 2))
    plan.new_round()  # a new connection
    assert plan.begin("r", (4, 2))
    assert not plan.begin("r", (4, 2))


def test_rows_refused_by_the_log_are_opened_again_once_per_index_of_the_log() -> None:
    plan = Recovery()
    plan.new_round()
    first = plan.begin("r", (3, 1))
    assert first is not None and first.log_from == 0  # the first pass: all of them
    plan.reopened_to("r", more_keys=False, log_to=None)  # all tried
    second = plan.begin("r", (3, 2))  # a key learned, the log as it was
    assert second is not None and second.log_from is None
    plan.reopened_to("r", more_keys=False, log_to=None)
    plan.new_round()  # a new connection: the log as it was
    third = plan.begin("r", (3, 2))
    assert third is not None and third.log_from is None
    plan.reopened_to("r", more_keys=False, log_to=None)
    fourth = plan.begin("r", (4, 2))  # an op learned
    assert fourth is not None and fourth.log_from == 0
    plan.reopened_to("r", more_keys=False, log_to=None)
    plan.new_round(key_accepted=True)  # the user accepted a key change
    fifth = plan.begin("r", (4, 2))
    assert fifth is not None and fifth.log_from == 0


def test_a_pass_that_left_rows_to_open_again_makes_the_next_one_due() -> None:
    plan = Recovery()
    plan.new_round()
    assert plan.begin("r", (3, 1))
    plan.reopened_to("r", more_keys=False, log_to=700)  # the cap: rows past 700 are left
    more = plan.begin("r", (3, 1))
    assert more is not None and more.log_from == 700 and not more.refetch  # opening only
    plan.reopened_to("r", more_keys=True, log_to=700)  # rows waiting for a key first
    more = plan.begin("r", (3, 1))
    assert more is not None and more.log_from == 700
    plan.reopened_to("r", more_keys=False, log_to=None)
    assert plan.begin("r", (3, 1)) is None


def test_refetch_is_capped_per_pass_and_per_round() -> None:
    plan = Recovery()
    plan.new_round()
    seqs = list(range(2000, 0, -1))
    asked: list[int] = []
    for epoch in range(20):  # as many changes as a server could wish for
        assert plan.begin("r", (0, epoch + 1))
        top = plan.below("r")[0]
        order = [s for s in seqs if top is None or s < top] + [
            s for s in seqs if top is not None and s >= top
        ]
        picked = [s for span in plan.pick_refetch("r", order, []) for s in span.seqs]
        assert len(picked) <= REFETCH_PER_PASS
        asked += picked
    assert len(asked) == REFETCH_PER_ROUND  # the round's budget, then nothing
    assert len(set(asked)) == len(asked)  # no seq twice while others wait
    assert sorted(asked) == list(range(2000 - REFETCH_PER_ROUND + 1, 2001))  # newest down
    plan.new_round()
    plan.begin("r", (0, 1))
    assert sum(len(span.seqs) for span in plan.pick_refetch("r", seqs, [])) == REFETCH_PER_PASS


def test_refetch_asks_rows_refused_for_good_first_and_takes_turns_in_each_kind() -> None:
    plan = Recovery()
    plan.new_round()
    plan.begin("r", (0, 1))
    forged, waiting = [30, 20, 10], list(range(2000, 1900, -1))
    spans = plan.pick_refetch("r", forged, waiting)
    picked = sorted(s for span in spans for s in span.seqs)
    assert picked[:3] == [10, 20, 30]  # refused for good: all of them, first
    assert picked[3:] == list(range(2000 - (REFETCH_PER_PASS - 3) + 1, 2001))  # then the newest
    assert plan.below("r") == (10, 2000 - (REFETCH_PER_PASS - 3) + 1)  # where it goes on


def test_passes_remember_nothing_of_a_room_the_user_left() -> None:
    plan = Recovery()
    plan.new_round()
    plan.begin("r", (0, 1))
    plan.begin("gone", (0, 1))
    plan.keep(["r"])
    assert plan.below("gone") == (None, None)
    assert plan.begin("gone", (0, 1))  # a first pass again, if the user comes back
    plan.forget("gone")
    assert "gone" not in repr(plan)


def test_what_a_copy_does_to_an_error_row() -> None:
    # opened again from the kept envelope
    assert reopened(_opened(None), was="no key", shown_at=None) is Fate.OPEN
    assert reopened(_opened(None), was="no key", shown_at=7) is Fate.REPLAY
    assert reopened(_opened("M5"), was="refused (M5)", shown_at=None) is Fate.KEEP
    assert reopened(_opened("M5"), was="no key (M2)", shown_at=None) is Fate.HOLD  # new verdict
    # fetched again (`waits`: the row keeps an envelope a key or op may open)
    assert refetched(_opened(None), waits=False, shown_at=None) is Fate.OPEN
    assert refetched(_opened(None), waits=False, shown_at=3) is Fate.REPLAY
    assert refetched(_opened("M2"), waits=False, shown_at=None) is Fate.HOLD
    assert refetched(_opened("M5"), waits=True, shown_at=None) is Fate.KEEP
    assert refetched(_opened("M3"), waits=True, shown_at=None) is Fate.KEEP
    assert refetched(_opened("M1"), waits=False, shown_at=None) is Fate.KEEP


def test_a_copy_goes_only_where_its_epoch_fits_between_the_rows_that_opened() -> None:
    assert fits(3, (None, None)) and fits(3, (3, 3)) and fits(3, (2, 4)) and fits(0, (None, 0))
    assert not fits(3, (4, None)) and not fits(3, (None, 2))
    assert placed(Fate.OPEN, 5, (0, 0), own=False) is Fate.KEEP  # a copy fetched: not used
    assert placed(Fate.HOLD, 5, (0, 0), own=False) is Fate.KEEP
    assert placed(Fate.OPEN, 5, (0, 0), own=True) is Fate.DROP  # its own: never opens there
    assert placed(Fate.REPLAY, 5, (0, 0), own=True) is Fate.DROP
    assert placed(Fate.OPEN, 0, (0, 0), own=True) is Fate.OPEN
    assert placed(Fate.KEEP, 5, (0, 0), own=True) is Fate.KEEP


# --- a room, its keys and its messages, made with real keys ----------------------------------


class Node:
    """Answers a client's requests from lists, as a server would (or a
    hostile one: `serve` decides which copy of a seq it hands out)."""

    def __init__(self) -> None:
        self.live = True
        self.addresses: list[Any] = []
        self.ops: list[m.SignedOp] = []
        self.packets: list[m.KeyPacket] = []
        self.withheld: set[int] = set()  # epochs whose packets are not served
        self.serve: dict[int, m.StoredMessage] = {}
        self.asked: list[m.History] = []

    async def request(self, req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply:
        if isinstance(req, m.Members):
            return m.MemberLog(room=req.room, ops=self.ops[req.after + 1 :])
        if isinstance(req, m.FetchKeys):
            packets = [
                p for p in self.packets if p.epoch >= req.min_epoch and p.epoch not in self.withheld
            ]
            return m.KeyPackets(room=req.room, packets=packets)
        if isinstance(req, m.History):
            self.asked.append(req)
            after = req.after or 0
            items = [self.serve[s] for s in sorted(self.serve) if s > after][: req.limit]
            return m.Messages(room=req.room, items=items, head=max(self.serve, default=0))
        raise AssertionError(f"not expected: {req}")


class Room:
    """Room "r", made by bob with alice; alice's engine parts are under test."""

    def __init__(self, tmp: Path) -> None:
        self.ids = {name: Identity.generate(name) for name in ("alice", "bob")}
        self.node = Node()
        self.events: list[ev.Event] = []
        me = self.ids["alice"]
        self.cache = Cache(tmp / "alice.db", cache_key(me.sign_seed))
        self.core = TrustCore(me, self.cache, self.events.append)
        parts = Parts(
            identity=me,
            cache=self.cache,
            core=self.core,
            conn=self.node,  # type: ignore[arg-type]
            emit=self.events.append,
        )
        self.sync = Sync(parts)
        state = MemberState.empty("r")
        for kind, target in (("create", "bob"), ("add", "alice")):
            op = state.next_op(kind, "bob", target, self.ids[target].sign_pub, 1)  # type: ignore[arg-type]
            signed = sign_op(self.ids["bob"], op)
            state, _ = state.apply(signed)
            self.node.ops.append(signed)
        self.keys: dict[int, EpochKey] = {}
        self.n = 0

    def epoch(self, epoch: int) -> None:
        key = self.keys[epoch] = new_epoch_key("r", epoch, len(self.node.ops) - 1)
        alice = self.ids["alice"].sign_pub
        self.node.packets.append(wrap_epoch_key(self.ids["bob"], key, "alice", alice))

    def message(self, seq: int, text: str, epoch: int = 0) -> m.StoredMessage:
        self.n += 1
        env = seal_message(
            self.ids["bob"],
            room="r",
            epoch=epoch,
            key=self.keys[epoch].key,
            txn=f"txn{self.n:08d}AAAAAAAAAA",
            plaintext=Plaintext(text=text, ts=int(time.time() * 1000)),
        )
        return m.StoredMessage(seq=seq, ts=1000 + seq, envelope=env)

    def rows(self) -> list[tuple[int, str | None, str | None]]:
        return [(r.seq, r.text, r.error) for r in self.cache.messages("r", limit=10_000)]

    def shown(self) -> list[tuple[int, str | None]]:
        return [
            (e.message.seq, e.message.text)
            for e in self.events
            if isinstance(e, ev.MessageReceived) and e.message.error is None
        ]


def forged(item: m.StoredMessage) -> m.StoredMessage:
    sig = bytes([item.envelope.sig[0] ^ 1]) + item.envelope.sig[1:]
    return m.StoredMessage(
        seq=item.seq, ts=item.ts, envelope=m.Envelope(**{**_fields(item.envelope), "sig": sig})
    )


def _fields(env: m.Envelope) -> dict[str, Any]:
    return {f: getattr(env, f) for f in env.__struct_fields__}


@pytest.fixture
def w(tmp_path: Path) -> Any:
    room = Room(tmp_path)
    room.epoch(0)
    yield room
    room.cache.close()


async def _connected(w: Room) -> None:
    """What the engine does on a (re)connection: a new round, then a sync."""
    async with w.sync.p.lock:
        w.sync.recover.new_round()
        await w.sync.refresh("r")
        await w.sync.recover.rooms()


# --- the cache ----------------------------------------------------------------------------


async def test_the_envelope_of_a_row_that_did_not_open_is_kept_sealed(
    w: Room, tmp_path: Path
) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    item = w.message(1, "under a key not served yet", epoch=1)
    await w.sync.ingest_page("r", [item], live=True)
    assert w.rows() == [(1, None, "no key for epoch 1 (M2)")]
    assert w.cache.kept_envelopes("r", [1]) == {1: item.envelope}
    db = sqlite3.connect(tmp_path / "alice.db")
    (stored,) = db.execute("SELECT envelope FROM messages WHERE seq=1").fetchone()
    db.close()
    for clear in (encode(item.envelope), item.envelope.ct, item.envelope.sig):
        assert clear not in stored  # sealed at rest, like a text
    assert w.cache.unopened("r", waits=True, below=None, limit=10) == [1]  # with its rule
    assert w.cache.waiting_for_keys("r", [1], 10) == {1: ("no key for epoch 1 (M2)", "M2")}


async def test_rewrite_never_touches_a_row_that_opened(w: Room) -> None:
    await _connected(w)
    good, other = w.message(1, "fine"), w.message(1, "another at the same seq")
    await w.sync.ingest_page("r", [good], live=True)
    with w.cache.batch("r") as batch:
        assert not batch.rewrite(1, None, other.envelope, sent_ms=0, text="swapped")
        assert not batch.rewrite(1, None, other.envelope, error="x", envelope=b"y")
    assert w.rows() == [(1, "fine", None)]


# --- the engine's sync, against the node stand-in ------------------------------------------------


async def test_a_message_whose_key_arrives_later_opens_in_its_place(w: Room) -> None:
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}  # the key packet comes after the message (or is held back)
    early = w.message(1, "sent under the new key", epoch=1)
    await w.sync.ingest_page("r", [early], live=True)
    assert w.rows() == [(1, None, "no key for epoch 1 (M2)")]
    assert w.cache.room("r").cursor == 1  # type: ignore[union-attr]
    w.node.withheld = set()
    # The next message under that epoch makes the client fetch the key; the
    # first opens in its place, before the second is taken.
    await w.sync.ingest_page("r", [w.message(2, "and another", epoch=1)], live=True)
    assert w.rows() == [(1, "sent under the new key", None), (2, "and another", None)]
    assert w.shown() == [(1, "sent under the new key"), (2, "and another")]
    assert w.node.asked == []  # opened from the kept envelope: nothing asked again
    assert w.cache.room("r").cursor == 2  # type: ignore[union-attr]


async def test_a_forged_copy_is_replaced_by_the_genuine_one_on_the_next_connection(
    w: Room,
) -> None:
    await _connected(w)
    genuine = [w.message(s, f"m{s}") for s in (1, 2, 3)]
    await w.sync.ingest_page("r", [forged(genuine[0]), genuine[1], forged(genuine[2])], live=True)
    assert [r[1] for r in w.rows()] == [None, "m2", None]
    # The same node, same connection, nothing learned: nothing is asked again.
    await w.sync.refresh("r")
    assert w.node.asked == []
    # A new connection (to an honest node, or the node stopped tampering).
    w.node.serve = {g.seq: g for g in genuine}
    w.node.serve[2] = w.message(2, "a swap of a message that opened")
    await _connected(w)
    assert w.rows() == [(1, "m1", None), (2, "m2", None), (3, "m3", None)]
    assert [(q.after, q.limit) for q in w.node.asked] == [(0, 3)]  # one request for 1 and 3
    assert w.shown() == [(2, "m2"), (1, "m1"), (3, "m3")]  # each once


async def test_a_copy_of_a_message_shown_elsewhere_becomes_a_replay_marker(w: Room) -> None:
    await _connected(w)
    original = w.message(1, "once")
    await w.sync.ingest_page("r", [forged(original)], live=True)
    copy = m.StoredMessage(seq=2, ts=5, envelope=original.envelope)  # the server replays it
    await w.sync.ingest_page("r", [copy], live=True)
    assert w.rows() == [(1, None, w.rows()[0][2]), (2, "once", None)]
    w.node.serve = {1: original}
    await _connected(w)
    # The message shown at 2 stays; the genuine copy at 1 is not shown a second time.
    assert w.rows() == [(1, None, "replay of message 2"), (2, "once", None)]
    assert w.shown() == [(2, "once")]


async def test_a_node_that_keeps_serving_garbage_is_asked_a_bounded_number_of_times(
    w: Room,
) -> None:
    await _connected(w)
    count = REFETCH_PER_PASS + 6
    genuine = [w.message(s, f"m{s}") for s in range(1, count + 1)]
    garbage = {g.seq: forged(g) for g in genuine}
    await w.sync.ingest_page("r", list(garbage.values()), live=True)
    w.node.serve = garbage
    checked: list[int] = []
    verify = w.core.verify_many
    w.core.verify_many = lambda r, envs, crypt: checked.append(len(envs)) or verify(r, envs, crypt)  # type: ignore[method-assign]
    rounds = 3
    for _ in range(rounds):
        await _connected(w)
        for _ in range(5):  # refreshes and syncs that learn nothing
            async with w.sync.p.lock:
                await w.sync.refresh("r")
                await w.sync.recover.rooms()
    assert len(w.node.asked) == rounds  # once a round, in one request
    assert sum(checked) == rounds * REFETCH_PER_PASS  # within the cap (none opened again)
    asked = [s for q in w.node.asked for s in range(q.after + 1, q.after + 1 + q.limit)]
    assert set(asked) == set(range(1, count + 1))  # taking turns: every seq asked
    assert all(r[1] is None for r in w.rows()) and w.shown() == []


async def test_a_row_another_process_of_the_home_opened_is_told_again_here(
    w: Room, tmp_path: Path
) -> None:
    """A row told as unreadable here that another process of the same home
    opened (its key came there first) is told again, opened, with the next
    page this engine stores (it has nothing left to open itself)."""
    await _connected(w)
    w.epoch(1)
    w.node.withheld = {1}
    item = w.message(1, "opened by the other process", epoch=1)
    await w.sync.ingest_page("r", [item], live=True)
    assert w.rows() == [(1, None, "no key for epoch 1 (M2)")] and w.shown() == []
    me = w.ids["alice"]
    cache = Cache(tmp_path / "alice.db", cache_key(me.sign_seed))
    other: list[ev.Event] = []
    parts = Parts(
        identity=me,
        cache=cache,
        core=TrustCore(me, cache, other.append),
        conn=w.node,  # type: ignore[arg-type]
        emit=other.append,
    )
    w.node.withheld = set()
    elsewhere = Sync(parts)
    async with parts.lock:
        elsewhere.recover.new_round()
        await elsewhere.refresh("r")
        await elsewhere.recover.rooms()
    cache.close()
    assert w.rows() == [(1, "opened by the other process", None)]
    # Still connected, nothing of the room refreshed: the next page tells it.
    await w.sync.ingest_page("r", [w.message(2, "the next one")], live=True)
    assert w.shown() == [(1, "opened by the other process"), (2, "the next one")]
    await _connected(w)  # and no pass tells it twice
    assert w.shown() == [(1, "opened by the other process"), (2, "the next one")]
