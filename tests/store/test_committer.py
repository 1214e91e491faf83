"""The group committer alone, with a fake backend commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from curvechat.store import Committed, NewMessage, NoSuchRoom, StoreRefused, StoreUnavailable
from curvechat.store.committer import GroupCommitter, Outcome


def msgs(tag: str, n: int = 1) -> list[NewMessage]:
    return [NewMessage("r", "u", f"{tag}{i}", b"") for i in range(n)]


class FakeBackend:
    """Acks every message with a running seq; can fail chosen groups."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []  # txns of each group's batches, in order
        self.fail: dict[int, Exception] = {}  # group index -> raised by commit
        self.seq = 0

    async def commit(self, batches: list[Sequence[NewMessage]]) -> list[Outcome]:
        n = len(self.groups)
        self.groups.append([b[0].txn for b in batches])
        await asyncio.sleep(0)
        if n in self.fail:
            raise self.fail[n]
        out: list[Outcome] = []
        for batch in batches:
            if batch[0].txn.startswith("bad"):
                out.append(NoSuchRoom("nope"))
                continue
            acks = []
            for m in batch:
                self.seq += 1
                acks.append(Committed(m.room, m.txn, self.seq, 0, False))
            out.append(acks)
        return out


async def test_groups_take_whole_batches_in_order_up_to_batch_max() -> None:
    backend = FakeBackend()
    c = GroupCommitter(backend.commit, batch_max=4, name="test")
    sizes = [1, 2, 1, 5, 1, 3, 3]
    futures = [c.submit(msgs(f"b{i}-", n)) for i, n in enumerate(sizes)]
    assert c.queued == len(sizes)
    results = await asyncio.gather(*futures)
    # At most 4 messages per group, but a bigger batch goes whole, alone.
    assert backend.groups == [["b0-0", "b1-0", "b2-0"], ["b3-0"], ["b4-0", "b5-0"], ["b6-0"]]
    seqs = [a.seq for r in results for a in r]
    assert seqs == list(range(1, sum(sizes) + 1))
    assert c.queued == 0


async def test_a_failed_group_fails_only_its_callers() -> None:
    backend = FakeBackend()
    cause = OSError("disk")
    error = StoreUnavailable("the commit failed")
    error.__cause__ = cause
    backend.fail[1] = error
    c = GroupCommitter(backend.commit, batch_max=2, name="test")
    futures = [c.submit(msgs(f"b{i}-")) for i in range(6)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "list",
        "list",
        "StoreUnavailable",
        "StoreUnavailable",
        "list",
        "list",
    ]
    assert results[2] is not results[3]  # one exception per caller
    assert all(r.__cause__ is cause for r in results[2:4])  # type: ignore[union-attr]
    # The committer keeps going after the failure, later submissions too.
    assert [a.seq for a in await c.submit(msgs("late"))] == [5]


async def test_refused_stays_refused_and_other_errors_pass_through() -> None:
    backend = FakeBackend()
    backend.fail[0] = StoreRefused("etcd_auth", "no")
    backend.fail[1] = RuntimeError("a bug")
    c = GroupCommitter(backend.commit, batch_max=1, name="test")
    first, second = c.submit(msgs("a")), c.submit(msgs("b"))
    with pytest.raises(StoreRefused) as refused:
        await first
    assert refused.value.code == "etcd_auth"
    with pytest.raises(RuntimeError):
        await second


async def test_a_caller_error_fails_only_that_caller() -> None:
    backend = FakeBackend()
    c = GroupCommitter(backend.commit, batch_max=10, name="test")
    futures = [c.submit(msgs("ok1")), c.submit(msgs("bad")), c.submit(msgs("ok2"))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], NoSuchRoom)
    assert [r[0].seq for r in (results[0], results[2])] == [1, 2]  # type: ignore[index]
    assert len(backend.groups) == 1


async def test_a_caller_that_gave_up_is_skipped() -> None:
    backend = FakeBackend()
    c = GroupCommitter(backend.commit, batch_max=10, name="test")
    first, gone, last = c.submit(msgs("a")), c.submit(msgs("gone")), c.submit(msgs("c"))
    gone.cancel()
    assert (await first)[0].seq == 1
    assert (await last)[0].seq == 2
    assert backend.groups == [["a0", "c0"]]


async def test_drain_waits_and_cancelling_the_committer_cancels_the_queue() -> None:
    backend = FakeBackend()
    c = GroupCommitter(backend.commit, batch_max=1, name="test")
    futures = [c.submit(msgs(f"b{i}-")) for i in range(3)]
    await c.drain()
    assert all(f.done() and not f.cancelled() for f in futures)
    await c.drain()  # nothing running: returns at once

    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(batches: list[Sequence[NewMessage]]) -> list[Outcome]:
        started.set()
        await release.wait()
        return [[] for _ in batches]

    c = GroupCommitter(slow, batch_max=1, name="test")
    futures = [c.submit(msgs(f"b{i}-")) for i in range(3)]
    await started.wait()
    task = c._task
    assert task is not None
    task.cancel()
    await c.drain()
    assert all(f.cancelled() for f in futures)
    assert c.queued == 0


def test_batch_max_must_be_positive() -> None:
    async def commit(batches: list[Sequence[NewMessage]]) -> list[Outcome]:
        return []

    with pytest.raises(ValueError):
        GroupCommitter(commit, batch_max=0, name="test")
