"""etcd-specific behaviour of EtcdStore: group commit, etcd's --max-txn-ops,
compare-and-swap between two nodes' stores, idempotency across nodes, the
URL syntax, and an unreachable cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvechat.store import (
    ChangeTooLarge,
    EpochRecord,
    MemberChange,
    NewMessage,
    OpRecord,
    StoreUnavailable,
)
from curvechat.store.etcd import DEFAULT_PREFIX, EtcdStore, parse_etcd_url
from curvechat.store.etcd.keys import q, uq

from support.etcd import EtcdCluster, etcd_cluster
from support.servers import free_port


def msg(room: str, sender: str, txn: str, size: int = 16) -> NewMessage:
    return NewMessage(room, sender, txn, txn.encode().ljust(size, b"."))


async def make_room(store: EtcdStore, room: str) -> None:
    await store.create_room(
        room,
        [OpRecord(0, b"op", b"sig")],
        [MemberChange("alice", True, True)],
        EpochRecord(0, 0, "alice"),
        [],
    )


@pytest.fixture
async def two(etcd_for_store: EtcdCluster) -> AsyncIterator[tuple[EtcdStore, EtcdStore]]:
    """Two stores on one prefix: what two chat nodes of a cluster have."""
    prefix = f"/test-{uuid.uuid4().hex}/"
    endpoints = etcd_for_store.endpoints.split(",")
    a, b = EtcdStore(endpoints, prefix=prefix), EtcdStore(endpoints, prefix=prefix)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40) | st.sampled_from(["general", "@alice:bob", "a/b", "%2F", "~x.y-z_"]))
def test_a_key_part_is_quoted_as_urllib_quotes_it(name: str) -> None:
    """`q` skips `quote` for names it would leave as they are: same keys."""
    assert q(name) == urllib.parse.quote(name, safe="")
    assert "/" not in q(name) and uq(q(name)) == name


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://h1:2379,h2:2380") == (["h1:2379", "h2:2380"], DEFAULT_PREFIX)
    assert parse_etcd_url("etcd://h1,10.0.0.2:1/chat/") == (["h1:2379", "10.0.0.2:1"], "/chat/")
    for bad in ("http://h1:2379", "etcd://", "etcd://,/x"):
        with pytest.raises(ValueError):
            parse_etcd_url(bad)


async def test_group_commit_batches_concurrent_callers(two: tuple[EtcdStore, EtcdStore]) -> None:
    store, _ = two
    await make_room(store, "r")
    n = 200
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(store.append_messages([msg("r", "alice", f"t{i:04d}")]) for i in range(n))
    )
    elapsed = time.perf_counter() - t0
    assert sorted(r[0].seq for r in results) == list(range(1, n + 1))
    # A put a message, one a run, the head: at most 126 messages per
    # 128-op transaction (the fast path's compares: one a message, two a room).
    assert store.commits < n / 10, store.commits
    assert store.committed_messages == n
    print(f"{n} concurrent single-message sends: {store.commits} txns, {n / elapsed:.0f} msg/s")


async def test_respects_max_txn_ops(etcd_for_store: EtcdCluster) -> None:
    store = EtcdStore(
        etcd_for_store.endpoints.split(","), prefix=f"/t-{uuid.uuid4().hex}/", max_txn_ops=9
    )
    await store.open()
    try:
        await make_room(store, "r")
        acks = await store.append_messages([msg("r", "alice", f"t{i:03d}") for i in range(20)])
        assert [a.seq for a in acks] == list(range(1, 21))
        # 7 messages (7 idempotency keys, one run) + the head per transaction.
        assert store.commits == 3
        assert [r.seq for r in await store.messages("r", limit=100)] == list(range(1, 21))
        # A membership change that cannot be one transaction is refused whole.
        members = [MemberChange(f"u{i}", True, False) for i in range(4)]
        with pytest.raises(ChangeTooLarge):
            await store.create_room(
                "big", [OpRecord(0, b"op", b"sig")], members, EpochRecord(0, 0, "u0"), []
            )
        assert await store.room("big") is None
    finally:
        await store.close()


async def test_two_nodes_cas_on_one_room(two: tuple[EtcdStore, EtcdStore]) -> None:
    a, b = two
    await make_room(a, "r")
    per = 100
    results = await asyncio.gather(
        *(
            s.append_messages([msg("r", name, f"t{i:04d}")])
            for i in range(per)
            for s, name in ((a, "alice"), (b, "bob"))
        )
    )
    assert sorted(r[0].seq for r in results) == list(range(1, 2 * per + 1))
    assert a.cas_retries + b.cas_retries > 0  # they really raced
    rows = await b.messages("r", limit=1000)
    assert [r.seq for r in rows] == list(range(1, 2 * per + 1))
    room = await a.room("r")
    assert room is not None and room.head == 2 * per


async def test_idempotent_resend_through_another_node(two: tuple[EtcdStore, EtcdStore]) -> None:
    a, b = two
    await make_room(a, "r")
    (first,) = await a.append_messages([msg("r", "alice", "same")])
    racing = await asyncio.gather(
        a.append_messages([msg("r", "alice", "same")]),
        b.append_messages([msg("r", "alice", "same")]),
        b.append_messages([msg("r", "alice", "other")]),
    )
    assert racing[0][0].duplicate and racing[1][0].duplicate
    assert (racing[1][0].seq, racing[1][0].ts_ms) == (first.seq, first.ts_ms)
    assert [r.txn for r in await a.messages("r")] == ["same", "other"]


async def test_unreachable_etcd_is_unavailable() -> None:
    store = EtcdStore([f"127.0.0.1:{free_port()}"], timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert time.monotonic() - t0 < 5
    with pytest.raises(StoreUnavailable):
        await store.append_messages([msg("r", "alice", "t")])
    await store.close()


def test_etcd_store_does_not_load_transport_or_server() -> None:
    code = "import json, sys\nimport curvechat.store.etcd\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    forbidden = ("zmq", "textual", "aiohttp", "curvechat.server", "curvechat.client")
    assert [n for n in loaded if n.split(".")[0] in forbidden or n.startswith(forbidden)] == []


async def test_ping_fails_when_etcd_refuses_writes(tmp_path: Path) -> None:
    """etcd's NOSPACE alarm (its space quota exceeded) lets reads through and
    refuses writes: the probe behind /readyz and the dashboard must say so."""
    from aetcd import rpc  # type: ignore[import-untyped]

    with etcd_cluster(tmp_path / "etcd", size=1) as etcd:
        store = EtcdStore(etcd.endpoints.split(","), prefix=f"/t-{uuid.uuid4().hex}/")
        await store.open()
        channel = rpc.insecure_channel(etcd.members[0].endpoint)
        maintenance = rpc.MaintenanceStub(channel)

        async def alarm(action: int) -> None:
            await maintenance.Alarm(
                rpc.AlarmRequest(action=action, memberID=0, alarm=rpc.AlarmType.NOSPACE),
                timeout=5,
            )

        try:
            await store.ping()
            await make_room(store, "r")
            await alarm(rpc.AlarmRequest.AlarmAction.ACTIVATE)
            assert (await store.room("r")) is not None  # reads still work...
            with pytest.raises(StoreUnavailable):
                await store.ping()  # ...but the probe fails
            await alarm(rpc.AlarmRequest.AlarmAction.DEACTIVATE)
            await store.ping()
        finally:
            await channel.close()
            await store.close()


async def test_a_remembered_room_commits_in_one_round_trip(
    two: tuple[EtcdStore, EtcdStore],
) -> None:
    """After its first commit to a room, a store sends the next groups
    straight away (store/etcd/messages.py's fast path), with the same answers."""
    a, b = two
    await make_room(a, "r")
    (first,) = await a.append_messages([msg("r", "alice", "t0")])  # read path: learns the room
    assert a._messages.fast == 0
    for i in range(1, 6):
        (ack,) = await a.append_messages([msg("r", "alice", f"t{i}")])
        assert ack.seq == i + 1 and ack.ts_ms >= first.ts_ms and not ack.duplicate
    assert (a._messages.fast, a._messages.fast_missed) == (5, 0)
    # One group with the same send twice, and a predecessor within the group.
    acks = await a.append_messages(
        [
            msg("r", "alice", "t6"),
            NewMessage("r", "alice", "t7", b"x", after="t6"),
            msg("r", "alice", "t6"),
        ]
    )
    assert [(x.seq, x.duplicate) for x in acks] == [(7, False), (8, False), (7, True)]
    assert a._messages.fast == 6
    # 150 callers at once: one group, more than a transaction holds; each
    # transaction takes the whole callers that fit, all on the fast path.
    acks2 = await asyncio.gather(
        *(a.append_messages([msg("r", "alice", f"u{i:03d}")]) for i in range(150))
    )
    assert sorted(x[0].seq for x in acks2) == list(range(9, 159))
    assert a._messages.fast >= 6 + 2 and a._messages.fast_missed == 0
    txns = [r.txn for r in await b.messages("r", limit=1000)]
    assert txns == [f"t{i}" for i in range(8)] + [f"u{i:03d}" for i in range(150)]
    room = await b.room("r")
    assert room is not None and room.head == 158


async def test_a_batch_too_big_for_one_transaction_commits_in_fast_parts(
    two: tuple[EtcdStore, EtcdStore],
) -> None:
    """One caller's batch of more messages than a transaction holds (what a
    node forwards to a room's owner) is committed on the fast path, in
    parts, in order, with a chain of predecessors; a resend inside such a
    batch is answered as one."""
    a, b = two
    await make_room(a, "r")
    await a.append_messages([msg("r", "alice", "t0")])  # read path: learns the room
    batch = [msg("r", "alice", "t1")]
    batch += [NewMessage("r", "alice", f"t{i}", b"x", after=f"t{i - 1}") for i in range(2, 151)]
    acks = await a.append_messages(batch)
    assert [(x.seq, x.duplicate, x.behind, x.stale) for x in acks] == [
        (seq, False, False, False) for seq in range(2, 152)
    ]
    # A put a message (its idempotency key), the run's and the head's, in
    # transactions of 128 operations: 126 + 24 messages, each part in one
    # round trip.
    assert (a._messages.fast, a._messages.fast_missed) == (2, 0)
    # A resend of one committed in an earlier part, in the middle of the next
    # big batch: the fast transaction holding it fails, the read path answers.
    batch = [msg("r", "alice", f"u{i:03d}") for i in range(100)]
    batch.insert(70, msg("r", "alice", "t5"))
    acks = await a.append_messages(batch)
    assert [x.seq for x in acks] == [*range(152, 222), 6, *range(222, 252)]
    assert [i for i, x in enumerate(acks) if x.duplicate] == [70]
    txns = [r.txn for r in await b.messages("r", limit=1000)]
    assert txns == [f"t{i}" for i in range(151)] + [f"u{i:03d}" for i in range(100)]
    room = await b.room("r")
    assert room is not None and room.head == 251


async def test_the_stores_own_rotation_keeps_the_room_on_the_fast_path(
    two: tuple[EtcdStore, EtcdStore],
) -> None:
    """A rotation or membership change written by the store that commits the
    room's messages (the room's owner) moves the meta it remembers: the
    sends that expect the new meta commit on the fast path at once, and one
    that still expects the old meta is refused stale. Another store's change
    is not taken on trust: its sends go the read path, as before."""
    a, b = two
    await make_room(a, "r")
    await a.append_messages([msg("r", "alice", "t0")])  # read path: learns the room
    await a.add_epoch("r", EpochRecord(1, 0, "alice"), [])
    (ack,) = await a.append_messages([NewMessage("r", "alice", "t1", b"x", expect=(1, 0))])
    assert ack.seq == 2 and not ack.stale
    assert (a._messages.fast, a._messages.fast_missed) == (1, 0)
    (old,) = await a.append_messages([NewMessage("r", "alice", "t2", b"x", expect=(0, 0))])
    assert old.stale
    await a.append_op(
        "r", OpRecord(1, b"op1", b"sig"), [MemberChange("bob", True)], EpochRecord(2, 1, "alice")
    )
    (ack,) = await a.append_messages([NewMessage("r", "alice", "t3", b"x", expect=(2, 1))])
    assert ack.seq == 3 and not ack.stale
    assert (a._messages.fast, a._messages.fast_missed) == (2, 0)
    # b rotates: a's memory is not moved, its fast transaction fails, the
    # read path commits.
    await b.add_epoch("r", EpochRecord(3, 1, "alice"), [])
    (ack,) = await a.append_messages([NewMessage("r", "alice", "t4", b"x", expect=(3, 1))])
    assert ack.seq == 4 and not ack.stale
    assert a._messages.fast == 2
    txns = [r.txn for r in await b.messages("r", limit=10)]
    assert txns == ["t0", "t1", "t3", "t4"]


async def test_the_fast_path_gives_way_whenever_etcd_disagrees(
    two: tuple[EtcdStore, EtcdStore],
) -> None:
    """A resend, another writer, a missing predecessor, a stale room: the
    fast transaction's compares fail and the read path answers as always."""
    a, b = two
    await make_room(a, "r")
    (t1,) = await a.append_messages([msg("r", "alice", "t1")])
    await a.append_messages([msg("r", "alice", "t2")])
    # a resend of t1: its idempotency key exists
    (again,) = await a.append_messages([msg("r", "alice", "t1")])
    assert again.duplicate and (again.seq, again.ts_ms) == (t1.seq, t1.ts_ms)
    # another writer moved the head
    (theirs,) = await b.append_messages([msg("r", "bob", "b1")])
    (ours,) = await a.append_messages([msg("r", "alice", "t3")])
    assert (theirs.seq, ours.seq) == (3, 4)
    # a predecessor that is not stored
    (behind,) = await a.append_messages([NewMessage("r", "alice", "t4", b"x", after="nope")])
    assert behind.behind and behind.seq == 0
    # a room changed since the sender's checks (and one message that is fine)
    room = await a.room("r")
    assert room is not None
    acks = await a.append_messages(
        [
            NewMessage("r", "alice", "t5", b"x", expect=(room.epoch + 1, room.op_head)),
            NewMessage("r", "alice", "t6", b"x", expect=(room.epoch, room.op_head)),
        ]
    )
    assert [(x.stale, x.seq) for x in acks] == [(True, 0), (False, 5)]
    assert a._messages.fast_missed >= 3
    assert [r.txn for r in await a.messages("r", limit=100)] == ["t1", "t2", "b1", "t3", "t6"]


async def test_a_current_expect_is_not_refused_as_stale_by_a_remembered_meta(
    two: tuple[EtcdStore, EtcdStore],
) -> None:
    """A `stale` answer on the fast path relies on the room's remembered
    meta, so the transaction compares it even when it writes nothing to that
    room: once the meta moved (a rotation), the read path judges, and learns
    it again. Before, a node whose groups also wrote to other rooms answered
    every send to the room stale from then on."""
    a, b = two
    await make_room(a, "r")
    await make_room(a, "s")
    await a.append_messages([msg("r", "alice", "r1"), msg("s", "alice", "s1")])  # remembered
    # The room's epoch moves on: a rotation, taken by this very store.
    await a.add_epoch("r", EpochRecord(1, 0, "alice"), [])  # this very node
    room = await b.room("r")
    assert room is not None
    current = (room.epoch, room.op_head)
    # The read path takes a message that expects the room as it is now ...
    alone = await b.append_messages([NewMessage("r", "alice", "r2", b"x", expect=current)])
    assert not alone[0].stale
    # ... and so must `a`, whose groups also write to another room (a busy
    # node): the remembered meta is never compared, so never learned again.
    stale = []
    for i in range(5):
        acks = await a.append_messages(
            [
                msg("s", "alice", f"s{i + 2}"),
                NewMessage("r", "alice", f"r{i + 3}", b"x", expect=current),
            ]
        )
        stale.append(acks[1].stale)
    assert stale == [False] * 5


async def test_a_resend_is_a_duplicate_on_the_fast_path_too_whatever_it_expects(
    two: tuple[EtcdStore, EtcdStore],
) -> None:
    """The read path answers a resend with its original seq before it looks
    at `expect`; the fast path judges `expect` first and adds no compare on
    the resend's idempotency key."""
    a, b = two
    await make_room(a, "r")
    await make_room(a, "s")
    (first, _) = await a.append_messages([msg("r", "alice", "r1"), msg("s", "alice", "s1")])
    room = await a.room("r")
    assert room is not None
    lagging = (room.epoch + 1, room.op_head)  # a node's view that is not the store's
    (read,) = await b.append_messages([NewMessage("r", "alice", "r1", b"r1", expect=lagging)])
    assert (read.duplicate, read.seq) == (True, first.seq)  # the read path
    acks = await a.append_messages(
        [msg("s", "alice", "s2"), NewMessage("r", "alice", "r1", b"r1", expect=lagging)]
    )
    assert [(x.txn, x.duplicate, x.stale, x.seq) for x in acks][1] == ("r1", True, False, first.seq)
