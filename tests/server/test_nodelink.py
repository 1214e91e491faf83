"""The forwarding side of the node link (server/nodelink.py Forwarder)
without an owner to reach: routing by ownership, the fallback to a local
commit, acks in the caller's order, and no forward left unsettled."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import zmq.asyncio

from curvechat.server.forwarder import Forwarder
from curvechat.server.ownership import Ownership, owner_of
from curvechat.store import Committed, NewMessage, StoreUnavailable

NODES = ["a", "b"]
OURS = next(f"r{i}" for i in range(100) if owner_of(f"r{i}", NODES) == "a")
THEIRS = next(f"r{i}" for i in range(100) if owner_of(f"r{i}", NODES) == "b")


class FakeStore:
    """The local group commit: records what was queued, in order."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail_rooms: set[str] = set()
        self.duplicates: set[str] = set()

    def submit(self, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        self.calls.append([m.txn for m in batch])
        fut: asyncio.Future[list[Committed]] = asyncio.get_running_loop().create_future()
        if any(m.room in self.fail_rooms for m in batch):
            fut.set_exception(StoreUnavailable("etcd is away"))
        else:
            seq = len(self.calls) * 100
            fut.set_result(
                [
                    Committed(m.room, m.txn, seq + i, 1, m.txn in self.duplicates)
                    for i, m in enumerate(batch)
                ]
            )
        return fut


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.term()


def forwarder(ctx: zmq.asyncio.Context, store: FakeStore) -> Forwarder:
    own = Ownership("a")
    own.set_live(NODES)
    pub, sec = zmq.curve_keypair()
    # No link is known for b: every forward to it fails at once.
    return Forwarder(ctx, pub, sec, own, store.submit, origin="boot-a")


def msg(room: str, txn: str) -> NewMessage:
    return NewMessage(room, "alice", txn, b"env")


async def test_parts_owned_elsewhere_fall_back_and_acks_keep_the_callers_order(
    ctx: zmq.asyncio.Context,
) -> None:
    store = FakeStore()
    fwd = forwarder(ctx, store)
    batch = [msg(OURS, "o1"), msg(THEIRS, "t1"), msg(OURS, "o2"), msg(THEIRS, "t2")]
    acks = await fwd.append(batch)
    assert [a.txn for a in acks] == ["o1", "t1", "o2", "t2"]
    # ours queued first (before any await), then b's part committed here
    assert store.calls == [["o1", "o2"], ["t1", "t2"]]
    assert (fwd.forwarded, fwd.fallbacks) == (0, 2)
    # no link is not a failed owner: b is not skipped for DOWN_S
    assert fwd.ownership.down_until == {}


async def test_a_fallback_answer_is_this_nodes_own(ctx: zmq.asyncio.Context) -> None:
    """Committed (or found stored) here: this node pushes it, not the watch;
    a duplicate stays one (the owner's late commit has the owner's origin,
    so this node's watch delivers it)."""
    store = FakeStore()
    store.duplicates = {"t1"}
    fwd = forwarder(ctx, store)
    acks = await fwd.append([msg(THEIRS, "t1"), msg(THEIRS, "t2")])
    assert [(a.duplicate, a.remote) for a in acks] == [(True, False), (False, False)]


async def test_a_failing_part_fails_the_call_and_leaves_nothing_unsettled(
    ctx: zmq.asyncio.Context,
) -> None:
    store = FakeStore()
    store.fail_rooms = {OURS}
    fwd = forwarder(ctx, store)
    unseen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, c: unseen.append(c))
    with pytest.raises(StoreUnavailable):
        await fwd.append([msg(OURS, "o1"), msg(THEIRS, "t1")])
    assert store.calls == [["o1"], ["t1"]]  # b's part was still settled (here)
    gc.collect()
    await asyncio.sleep(0)
    assert unseen == []


@pytest.mark.parametrize(
    "link",
    [("tcp://a,b:7701", None), ("tcp://user@h:7701", None), ("tcp://127.0.0.1:7701", b"short")],
)
async def test_a_link_libzmq_cannot_use_falls_back_and_warns_once(
    ctx: zmq.asyncio.Context, link: tuple[str, bytes | None], caplog: pytest.LogCaptureFixture
) -> None:
    """Another node's bad registry entry (a mistyped --link-advertise, a bad
    key) must not break this node: its rooms' sends are committed here."""
    store = FakeStore()
    fwd = forwarder(ctx, store)
    endpoint, key = link
    entry = (endpoint, key or zmq.curve_keypair()[0])
    with caplog.at_level(logging.WARNING, logger="curvechat.server"):
        for _ in range(3):  # as each registry refresh would
            fwd.set_links({"b": entry})
        acks = await fwd.append([msg(THEIRS, "t1")])
    assert [a.txn for a in acks] == ["t1"] and store.calls == [["t1"]]
    assert (fwd.forwarded, fwd.fallbacks) == (0, 1)
    assert sum("cannot use" in r.getMessage() for r in caplog.records) == 1
    await fwd.close()
