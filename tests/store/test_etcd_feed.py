"""The cluster feed and the node registry (store/etcd/feed.py) on a real etcd:
typed events in commit order, a revision that moves only past what the
caller took, a compacted revision said as such, and leases."""

from __future__ import annotations

import asyncio

import pytest
from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store import NewMessage, NodeNameTaken, StoredRow
from curvechat.store.etcd import EtcdStore
from curvechat.store.etcd.feed import (
    ClusterFeed,
    Compacted,
    FeedEvent,
    MessageCommitted,
    NodeRegistry,
    NodesChanged,
    OwnCommitted,
    RoomChanged,
    Undecodable,
)

from .test_etcd import make_room


async def take(feed: ClusterFeed, n: int) -> list[FeedEvent]:
    got: list[FeedEvent] = []
    async with asyncio.timeout(10):
        async for events in feed.stream():
            got += events
            if len(got) >= n:
                break
    return got


async def test_events_are_typed_and_in_commit_order(etcd_store: EtcdStore) -> None:
    feed = ClusterFeed(etcd_store, await etcd_store.current_revision())
    etcd_store.origin = "node-a"
    await make_room(etcd_store, "r")
    await etcd_store.append_messages(
        [NewMessage("r", "alice", "t1", b"e1"), NewMessage("r", "alice", "t2", b"e2", origin="b")]
    )
    registry = NodeRegistry(etcd_store, "n1", ttl=5)
    await registry.register(b"info")
    events = await take(feed, 4)
    assert events[0] == RoomChanged("r")
    assert [
        (e.row.seq, e.row.txn, e.origin) for e in events[1:3] if isinstance(e, MessageCommitted)
    ] == [
        (1, "t1", "node-a"),
        (2, "t2", "b"),
    ]
    assert events[3] == NodesChanged()
    assert await registry.values() == [b"info"]
    await registry.revoke()
    assert await registry.values() == []


async def test_the_own_origins_commits_come_without_their_value(etcd_store: EtcdStore) -> None:
    """A node's own commits, which it pushed itself, are told by room and
    seq only (their values are not decoded); every other origin's in full."""
    feed = ClusterFeed(etcd_store, await etcd_store.current_revision(), own="0123456789ab")
    await make_room(etcd_store, "r")
    await etcd_store.append_messages(
        [
            NewMessage("r", "alice", "t1", b"e1", origin="0123456789ab"),
            NewMessage("r", "alice", "t2", b"e2", origin="ba9876543210"),
            NewMessage("r", "alice", "t3", b"e3", origin="0123456789ab"),
        ]
    )
    events = await take(feed, 4)
    assert events[1:] == [
        OwnCommitted("r", 1),
        MessageCommitted(
            StoredRow("r", 2, events[2].row.ts_ms, "alice", "t2", b"e2"), "ba9876543210"
        ),  # type: ignore[union-attr]
        OwnCommitted("r", 3),
    ]


async def test_a_run_comes_as_its_messages_and_an_own_run_as_its_last_seq(
    etcd_store: EtcdStore,
) -> None:
    """A transaction's messages of one room and origin are one key (a run,
    store/etcd/runs.py): another origin's run comes as one event a message,
    in order, an own run as one `OwnCommitted` with its last seq."""
    own, other = "0123456789ab", "ba9876543210"
    feed = ClusterFeed(etcd_store, await etcd_store.current_revision(), own=own)
    await make_room(etcd_store, "r")
    await etcd_store.append_messages(
        [
            NewMessage("r", "alice", "t1", b"e1", origin=own),
            NewMessage("r", "alice", "t2", b"e2", origin=own),
            NewMessage("r", "bob", "t3", b"e3", origin=other),
            NewMessage("r", "bob", "t4", b"e4", origin=other),
            NewMessage("r", "bob", "t5", b"e5", origin=other),
            NewMessage("r", "alice", "t6", b"e6", origin=own),
        ]
    )
    events = await take(feed, 6)
    assert events[0] == RoomChanged("r")
    assert events[1] == OwnCommitted("r", 2)
    told = [e for e in events[2:5] if isinstance(e, MessageCommitted)]
    assert [(e.row.seq, e.row.txn, e.row.envelope, e.origin) for e in told] == [
        (3, "t3", b"e3", other),
        (4, "t4", b"e4", other),
        (5, "t5", b"e5", other),
    ]
    assert events[5:] == [OwnCommitted("r", 6)]


async def test_a_value_it_cannot_decode_is_told_and_the_watch_goes_on(
    etcd_store: EtcdStore,
) -> None:
    feed = ClusterFeed(etcd_store, await etcd_store.current_revision())
    await make_room(etcd_store, "r")
    await etcd_store.put(etcd_store.k_msg("r", 1), b"\x93\x01\xc1\xa1x")  # not msgpack at all
    await etcd_store.put(etcd_store.k_msg("r", 2), b"\x93\x01\x90\xa1x")  # a run of no message
    await etcd_store.put(etcd_store.k_head("r"), b"\x92\x02\x00")
    await etcd_store.append_messages([NewMessage("r", "alice", "t3", b"e3")])
    events = await take(feed, 4)
    assert events[0] == RoomChanged("r")
    assert [(e.room, e.seq) for e in events[1:3] if isinstance(e, Undecodable)] == [
        ("r", 1),
        ("r", 2),
    ]
    assert isinstance(events[3], MessageCommitted) and events[3].row.seq == 3


async def test_a_broken_stream_gives_the_untaken_events_again(etcd_store: EtcdStore) -> None:
    """The revision moves past a response's events only when the caller asks
    for the next one: a caller that stopped halfway gets them all again."""
    feed = ClusterFeed(etcd_store, await etcd_store.current_revision())
    await make_room(etcd_store, "r")
    await etcd_store.append_messages([NewMessage("r", "alice", "t1", b"e1")])
    first = await take(feed, 1)  # stopped inside the first response
    assert first[0] == RoomChanged("r")
    again = await take(feed, len(first))
    assert again == first
    # Taking on past them: the next stream starts after them.
    await etcd_store.append_messages([NewMessage("r", "alice", "t2", b"e2")])
    seen: list[FeedEvent] = []
    async with asyncio.timeout(10):
        async for events in feed.stream():
            seen += events
            if any(isinstance(e, MessageCommitted) and e.row.txn == "t2" for e in events):
                break
    txns = [e.row.txn for e in seen if isinstance(e, MessageCommitted)]
    assert txns[-1] == "t2" and txns.count("t1") <= 1


async def test_a_compacted_revision_is_said(etcd_store: EtcdStore) -> None:
    start = await etcd_store.current_revision()
    await make_room(etcd_store, "r")
    for i in range(3):
        await etcd_store.append_messages([NewMessage("r", "alice", f"t{i}", b"e")])
    now = await etcd_store.current_revision()
    await etcd_store._call("Compact", rpc.CompactionRequest(revision=now, physical=True))
    feed = ClusterFeed(etcd_store, start)
    (event,) = await take(feed, 1)
    assert event == Compacted(now)


async def test_a_name_is_claimed_only_when_free_or_ones_own(etcd_store: EtcdStore) -> None:
    def taken(value: bytes) -> str | None:
        return None if value.startswith(b"me") else f"held by {value.decode()}"

    other = NodeRegistry(etcd_store, "n2", ttl=5)
    await other.register(b"other node")
    me = NodeRegistry(etcd_store, "n2", ttl=5)
    with pytest.raises(NodeNameTaken, match="held by other node"):
        await me.register(b"me", taken)
    assert me.lease_id == 0  # the new lease was revoked, none left behind
    assert await me.values() == [b"other node"]
    await other.revoke()
    await me.register(b"me, first life", taken)  # free: claimed
    again = NodeRegistry(etcd_store, "n2", ttl=5)
    await again.register(b"me, second life", taken)  # its own entry: taken back
    assert await again.values() == [b"me, second life"]
    await me.revoke()  # the first life's lease no longer holds the key
    assert await again.values() == [b"me, second life"]
    await again.revoke()
