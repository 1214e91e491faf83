"""The batched path of `Store.append_messages`, run against every backend.

Both backends group their callers through `curvechat.store.committer`;
these tests hold them to the promises of base.py on that path: one order
per room in submission order, exactly once per (room, sender, txn) across
groups, stores and reopens, a failed group failing only its own callers,
and an ack meaning committed (another store on the same storage sees it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from curvechat.store import (
    Committed,
    EpochRecord,
    MemberChange,
    NewMessage,
    OpRecord,
    Store,
    StoreUnavailable,
)
from curvechat.store.committer import Outcome

StoreFactory = Callable[[], Store]


def msg(room: str, sender: str, txn: str) -> NewMessage:
    return NewMessage(room=room, sender=sender, txn=txn, envelope=f"env:{room}:{txn}".encode())


async def make_room(store: Store, room: str) -> None:
    await store.create_room(
        room,
        [OpRecord(0, b"op", b"sig")],
        [MemberChange("alice", True, True)],
        EpochRecord(0, 0, "alice"),
        [],
    )


def seqs_by_room(acks: Sequence[Committed]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for a in acks:
        out.setdefault(a.room, []).append(a.seq)
    return out


async def test_submitted_batches_commit_in_submission_order(store: Store) -> None:
    rooms = ("r1", "r2", "r3")
    for room in rooms:
        await make_room(store, room)
    batches = [
        [msg(rooms[(i + j) % 3], f"u{i % 7}", f"t{i}-{j}") for j in range(1 + i % 3)]
        for i in range(300)
    ]
    # Queued without an await in between: more than one group's worth.
    futures = [store.submit_messages(b) for b in batches]
    results = await asyncio.gather(*futures)
    acks = [a for r in results for a in r]
    assert [(a.room, a.txn) for a in acks] == [(m.room, m.txn) for b in batches for m in b]
    for room, seqs in seqs_by_room(acks).items():
        assert seqs == list(range(1, len(seqs) + 1)), room  # submission order, no gap
        rows = await store.messages(room, limit=10_000)
        assert [(r.seq, r.txn) for r in rows] == [(a.seq, a.txn) for a in acks if a.room == room]


async def test_submit_of_nothing_and_on_a_closed_store(store_factory: StoreFactory) -> None:
    s = store_factory()
    with pytest.raises(StoreUnavailable):
        s.submit_messages([msg("r", "a", "t")])
    await s.open()
    try:
        assert await s.submit_messages([]) == []
    finally:
        await s.close()
    with pytest.raises(StoreUnavailable):
        s.submit_messages([msg("r", "a", "t")])


async def test_exactly_once_per_key_across_groups_and_reopen(store_factory: StoreFactory) -> None:
    s = store_factory()
    await s.open()
    await make_room(s, "r")
    keys = [("r", f"u{i % 5}", f"t{i}") for i in range(60)]
    # Every key sent by three callers of ten keys each; with batch_max 16,
    # callers sending the same key are in different groups.
    s._committer.batch_max = 16  # type: ignore[attr-defined]
    futures = [
        s.submit_messages([msg(*keys[(10 * i + k) % len(keys)]) for k in range(10)])
        for i in range(18)
    ]
    acks = [a for r in await asyncio.gather(*futures) for a in r]
    first = {}
    for a in acks:
        assert not a.stale
        seen = first.setdefault(a.txn, (a.seq, a.ts_ms))
        assert (a.seq, a.ts_ms) == seen
    assert sum(not a.duplicate for a in acks) == len(keys)
    assert sorted(seq for seq, _ in first.values()) == list(range(1, len(keys) + 1))
    await s.close()

    # A new store remembers nothing of them in memory: the file / etcd must answer.
    again = store_factory()
    await again.open()
    try:
        resent = await asyncio.gather(
            *(
                again.append_messages([msg(*k), msg("r", "new", f"n{i}")])
                for i, k in enumerate(keys)
            )
        )
        for k, (old, new) in zip(keys, resent, strict=True):
            assert (old.seq, old.ts_ms, old.duplicate) == (*first[k[2]], True)
            assert not new.duplicate
        assert sorted(new.seq for _, new in resent) == list(range(61, 121))
        assert len(await again.messages("r", limit=1000)) == 120
    finally:
        await again.close()


@pytest.mark.parametrize("committed", [False, True], ids=["before-commit", "after-commit"])
async def test_failed_group_fails_only_its_own_callers(
    store: Store, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """The second group fails (injected where the committer calls the
    backend, before or after the backend's own commit ran): its callers get
    StoreUnavailable, the groups before and after it are acked as usual, and
    a resend of the failed messages is exactly once either way."""
    await make_room(store, "r")
    committer = store._committer  # type: ignore[attr-defined]
    real = committer._commit
    calls = 0

    async def flaky(batches: list[Sequence[NewMessage]]) -> list[Outcome]:
        nonlocal calls
        calls += 1
        if calls == 2:
            if committed:
                await real(batches)
            raise StoreUnavailable("injected failure")
        return list(await real(batches))

    monkeypatch.setattr(committer, "_commit", flaky)
    size = committer.batch_max // 2  # two callers per group
    batches = [[msg("r", f"u{c}", f"t{i}") for i in range(size)] for c in range(6)]
    results = await asyncio.gather(
        *(store.submit_messages(b) for b in batches), return_exceptions=True
    )
    assert calls == 3
    failed = [r for r in results if isinstance(r, BaseException)]
    assert [isinstance(r, StoreUnavailable) for r in results] == [False] * 2 + [True] * 2 + [
        False
    ] * 2
    assert len({id(r) for r in failed}) == 2  # one exception per caller
    ok = [a for r in results if isinstance(r, list) for a in r]
    gap = size * 2 if committed else 0  # the failed group's seqs, if it did commit
    assert [a.seq for a in ok] == [
        *range(1, 2 * size + 1),
        *range(2 * size + gap + 1, 4 * size + gap + 1),
    ]

    # The failed callers resend: stored exactly once, whatever the failure was.
    resent = await asyncio.gather(*(store.append_messages(b) for b in batches[2:4]))
    again = [a for r in resent for a in r]
    if committed:
        assert all(a.duplicate for a in again)
        assert [a.seq for a in again] == list(range(2 * size + 1, 4 * size + 1))
    else:
        assert not any(a.duplicate for a in again)
        assert [a.seq for a in again] == list(range(4 * size + 1, 6 * size + 1))
    rows = await store.messages("r", limit=10_000)
    assert [r.seq for r in rows] == list(range(1, 6 * size + 1))
    assert len({(r.sender, r.txn) for r in rows}) == len(rows)


async def test_an_ack_is_committed_and_two_stores_share_one_order(
    store_factory: StoreFactory,
) -> None:
    """An acked message is in the backing storage at once (a second store
    on it reads it without the first being closed); two stores appending to
    one room interleave into one gap-free order, exactly once, and see each
    other's membership changes (a message expecting the old one is stale)."""
    a, b = store_factory(), store_factory()
    await a.open()
    await b.open()
    try:
        await make_room(a, "r")
        (first,) = await a.append_messages([msg("r", "alice", "a0")])
        assert [(r.seq, r.txn) for r in await b.messages("r")] == [(first.seq, "a0")]
        acks: list[Committed] = [first]
        for i in range(1, 6):
            got = await asyncio.gather(
                a.append_messages([msg("r", "alice", f"a{i}"), msg("r", "bob", f"b{i - 1}")]),
                b.append_messages([msg("r", "bob", f"b{i}"), msg("r", "alice", f"a{i - 1}")]),
            )
            acks += [x for r in got for x in r]
        stored = {x.txn: x.seq for x in acks if not x.duplicate}
        assert sorted(stored.values()) == list(range(1, 13))  # a0..a5, b0..b5
        assert all(stored[x.txn] == x.seq for x in acks)
        await b.append_op("r", OpRecord(1, b"op1", b"sig1"), [MemberChange("bob", True)])
        (stale,) = await a.append_messages([NewMessage("r", "alice", "late", b"x", expect=(0, 0))])
        assert stale.stale
        (fresh,) = await a.append_messages([NewMessage("r", "alice", "late", b"x", expect=(0, 1))])
        assert (fresh.seq, fresh.stale, fresh.duplicate) == (13, False, False)
        rows = await b.messages("r", limit=100)
        assert [r.seq for r in rows] == list(range(1, 14))
    finally:
        await a.close()
        await b.close()
