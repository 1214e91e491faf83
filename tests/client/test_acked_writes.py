"""Acknowledged sends (client/sending.py `place_acks`, client/outboxrows.py
`record_sent`): judged against what the cache holds, then out of the outbox
and into the room's messages in one transaction, each text sealed at rest
once, each shown once; an ack that cannot be true stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from curvechat.client.cache import Cache
from curvechat.client.model import OutboxItem
from curvechat.client.sending import Placed, place_acks
from curvechat.client.unopenedrows import WAITS
from curvechat.protocol import messages as m

STORE, KNOWN, BAD, WAIT = Placed.STORE, Placed.KNOWN, Placed.BAD, Placed.WAIT


# --- the judgement, without a cache -------------------------------------------------
def _places(acks: list[tuple[str, str, str, int]], **facts: object) -> list[Placed]:
    taken = facts.get("taken", {})
    stored = facts.get("stored", set())
    return [p for p, _ in place_acks("me", "r", acks, taken=taken, stored=stored)]  # type: ignore[arg-type]


def test_fresh_acks_are_stored() -> None:
    assert _places([("a", "r", "a", 5), ("b", "r", "b", 6)]) == [STORE, STORE]


def test_an_ack_that_names_another_room_or_txn_is_bad() -> None:
    assert _places([("a", "other", "a", 5), ("b", "r", "c", 6), ("d", "r", "d", 7)]) == [
        BAD,
        BAD,
        STORE,
    ]


def test_an_ack_at_a_seq_holding_another_message_is_bad() -> None:
    taken = {5: ("bob", "x", "opened"), 6: ("me", "other-txn", "opened")}
    assert _places([("a", "r", "a", 5), ("b", "r", "b", 6)], taken=taken) == [BAD, BAD]


def test_two_sends_acked_at_one_seq_store_the_first_only() -> None:
    acks = [("a", "r", "a", 5), ("b", "r", "b", 5), ("c", "r", "c", 6)]
    placed = place_acks("me", "r", acks, taken={}, stored=set())
    assert [p for p, _ in placed] == [STORE, BAD, STORE]
    assert "message 5" in placed[1][1]


def test_a_send_a_push_brought_in_first_is_known_at_its_seq_or_another() -> None:
    taken = {5: ("me", "a", "opened")}  # pushed at the seq its ack names
    assert _places([("a", "r", "a", 5)], taken=taken) == [KNOWN]
    # pushed at another seq: the copy that verified stands, no second row
    assert _places([("a", "r", "a", 9)], stored={"a"}) == [KNOWN]
    # ... whatever seq its ack names, one that holds another message too:
    # A2 is judged before A1 (failing it would report a shown message unsent)
    assert _places([("a", "r", "a", 4)], taken={4: ("bob", "x", "opened")}, stored={"a"}) == [KNOWN]


def test_an_ack_at_a_row_of_ours_that_may_yet_open_waits() -> None:
    """Another process of this home sent it under a key this one does not
    hold yet (a rotation there): the pushed row claims to be this send and
    waits for the key. Neither stored nor failed: sent again later."""
    taken = {5: ("me", "a", "waits"), 6: ("bob", "b", "waits"), 7: ("me", "c", "never")}
    acks = [("a", "r", "a", 5), ("b", "r", "b", 6), ("c", "r", "c", 7)]
    assert _places(acks, taken=taken) == [WAIT, BAD, BAD]


# --- the cache ----------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache(tmp_path / "cache.db", b"k" * 32)
    c.ensure_room("r")
    yield c
    c.close()


def _queue(cache: Cache, texts: list[str]) -> list[OutboxItem]:
    cache.enqueue_many("r", [f"t{i}" for i in range(len(texts))], texts)
    return cache.outbox()


def _ack(item: OutboxItem, seq: int, ts: int = 0) -> tuple[OutboxItem, m.SendAck, int]:
    return item, m.SendAck(room=item.room, txn=item.txn, seq=seq, ts=ts), 0


def test_acked_sends_leave_the_outbox_and_are_readable_with_their_text(cache: Cache) -> None:
    items = _queue(cache, ["one", "two", "three"])
    shown, bad, _ = cache.record_sent(
        "r", "alice", [_ack(it, 10 + k, 1000 + k) for k, it in enumerate(items)]
    )
    assert bad == []
    assert [(m.seq, m.txn, m.text) for m in shown] == [
        (10, "t0", "one"),
        (11, "t1", "two"),
        (12, "t2", "three"),
    ]
    assert cache.outbox_count() == 0
    stored = cache.messages("r")
    assert [(m.seq, m.ts_ms, m.sender, m.text) for m in stored] == [
        (10, 1000, "alice", "one"),
        (11, 1001, "alice", "two"),
        (12, 1002, "alice", "three"),
    ]
    assert cache.room("r").head == 12  # type: ignore[union-attr]


def test_the_outbox_rows_sealed_text_is_stored_without_sealing_it_again(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _queue(cache, ["a", "b"])
    sealed: list[bytes] = []
    real = cache._seal

    def counting(data: bytes) -> bytes:
        sealed.append(data)
        return real(data)

    monkeypatch.setattr(cache, "_seal", counting)
    cache.record_sent("r", "alice", [_ack(it, k + 1) for k, it in enumerate(items)])
    assert sealed == []
    assert [m.text for m in cache.messages("r")] == ["a", "b"]


def test_a_message_a_push_brought_in_first_is_neither_replaced_nor_shown_again(
    cache: Cache,
) -> None:
    items = _queue(cache, ["mine", "also mine"])
    with cache.batch("r") as batch:  # the push of the first one came before its ack
        assert batch.add(5, 77, "alice", "t0", None, "mine", None)
    shown, bad, _ = cache.record_sent("r", "alice", [_ack(items[0], 5, 99), _ack(items[1], 6, 100)])
    assert bad == []
    assert [m.seq for m in shown] == [6]
    stored = {m.seq: m for m in cache.messages("r")}
    assert stored[5].ts_ms == 77  # the row the push stored is kept as it was
    assert stored[6].text == "also mine"
    assert cache.outbox_count() == 0


def test_acks_that_cannot_be_true_store_nothing_and_leave_the_sends_queued(
    cache: Cache,
) -> None:
    items = _queue(cache, ["first", "second", "third"])
    with cache.batch("r") as batch:
        assert batch.add(7, 1, "bob", "bobs-txn", None, "from bob", None)
    shown, bad, _ = cache.record_sent(
        "r", "alice", [_ack(items[0], 7), _ack(items[1], 8), _ack(items[2], 8)]
    )
    # The first was acked at bob's seq, the third at the seq the second was given.
    assert [item.txn for item, _ in bad] == ["t0", "t2"]
    assert [(m.seq, m.text) for m in shown] == [(8, "second")]
    assert [(m.seq, m.sender, m.text) for m in cache.messages("r")] == [
        (7, "bob", "from bob"),
        (8, "alice", "second"),
    ]
    assert [i.txn for i in cache.outbox()] == ["t0", "t2"]  # the outbox fails them


def test_an_ack_at_a_copy_of_ours_that_did_not_verify_is_bad(cache: Cache) -> None:
    """A server that pushes a tampered copy of our message, then acks the
    send at its seq, must not make the outbox forget the text."""
    items = _queue(cache, ["mine"])
    with cache.batch("r") as batch:
        assert batch.add(5, 1, "alice", "t0", None, None, "message does not verify")
    shown, bad, _ = cache.record_sent("r", "alice", [_ack(items[0], 5)])
    assert shown == [] and [item.txn for item, _ in bad] == ["t0"]
    assert [i.text for i in cache.outbox()] == ["mine"]


def test_an_ack_at_our_row_waiting_for_its_key_keeps_the_send_queued(cache: Cache) -> None:
    """The row at the ack's seq names our send and waits for its epoch's
    key (M2, its envelope kept): the send stays in the outbox, neither
    stored again nor failed; once the row opened, the same ack is known."""
    items = _queue(cache, ["mine"])
    cache._db.execute(
        "INSERT INTO messages (room, seq, ts_ms, sender, txn, error, epoch, envelope, rule)"
        " VALUES ('r', 5, 1, 'alice', 't0', 'no key for epoch 3 (M2)', 3, x'00', 'M2')"
    )
    assert cache._db.execute(f"SELECT {WAITS} FROM messages WHERE seq=5").fetchone()[0] == 1
    shown, bad, waiting = cache.record_sent("r", "alice", [_ack(items[0], 5)])
    assert (shown, bad, [i.txn for i in waiting]) == ([], [], ["t0"])
    assert [i.text for i in cache.outbox()] == ["mine"]
    cache._db.execute("UPDATE messages SET error=NULL, rule=NULL, envelope=NULL WHERE seq=5")
    shown, bad, waiting = cache.record_sent("r", "alice", [_ack(items[0], 5)])
    assert (shown, bad, waiting) == ([], [], [])
    assert cache.outbox() == []
