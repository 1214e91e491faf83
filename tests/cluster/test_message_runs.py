"""A node writes message runs (store/etcd/runs.py) only while every live
node in the registry says it reads them: during a rolling upgrade the
older nodes' watch and history reads keep working (the Cluster layer
in-process, on a real etcd)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from curvechat.server.cluster import Cluster
from curvechat.store import EpochRecord, MemberChange, NewMessage, OpRecord
from curvechat.store.etcd import EtcdStore, prefix_end
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.feed import NodeRegistry

from .test_relist import FakeNode, envelope
from support.etcd import EtcdCluster


async def test_runs_are_written_once_no_older_node_is_live(etcd3: EtcdCluster) -> None:
    prefix = f"/t-{uuid.uuid4().hex}/"
    endpoints = etcd3.endpoints.split(",")
    store = EtcdStore(endpoints, prefix=prefix)
    other = EtcdStore(endpoints, prefix=prefix)
    await store.open()
    await other.open()
    # An older node's entry: it says nothing of runs.
    older = NodeRegistry(other, "a", ttl=10)
    entry = {"name": "a", "connect": "tcp://127.0.0.1:2/" + "j" * 40, "status": "up"}
    await older.register(msgspec.msgpack.encode({**entry, "started_ms": 0}))
    cluster = Cluster(FakeNode(store), store, "tcp://127.0.0.1:1/" + "k" * 40)  # type: ignore[arg-type]
    assert not store.message_runs
    try:
        await cluster.start()
        await cluster.refresh_peers()
        assert [n.name for n in cluster.nodes] == ["a", "b"] and not store.message_runs
        await store.create_room(
            "r", [OpRecord(0, b"op", b"sig")], [MemberChange("alice", True, True)],
            EpochRecord(0, 0, "alice"), [],
        )  # fmt: skip

        def batch(first: int) -> list[NewMessage]:
            txns = [f"txn-{i:04d}" for i in range(first, first + 3)]
            return [NewMessage("r", "alice", t, envelope("r", t)) for t in txns]

        await store.append_messages(batch(1))
        await older.revoke()
        await cluster.refresh_peers()
        assert [n.name for n in cluster.nodes] == ["b"] and store.message_runs
        await store.append_messages(batch(4))
        kvs = await store._range(
            store.message_prefix, prefix_end(store.message_prefix), keys_only=True
        )
        assert [store.parse_msg_key(bytes(kv.key))[1] for kv in kvs] == [1, 2, 3, 6]
        rows = await other.messages("r", after=0)
        assert [r.txn for r in rows] == [f"txn-{i:04d}" for i in range(1, 7)]
    finally:
        await cluster.stop()
        await store.close()
        await other.close()


async def test_a_value_the_node_cannot_decode_is_counted_and_the_next_pushed(
    etcd3: EtcdCluster,
) -> None:
    """One message value no node can read (a newer node's, or damaged) does
    not stop the node's watch: it is counted, and what follows is pushed."""

    prefix = f"/t-{uuid.uuid4().hex}/"
    endpoints = etcd3.endpoints.split(",")
    store, writer = EtcdStore(endpoints, prefix=prefix), EtcdStore(endpoints, prefix=prefix)
    await store.open()
    await writer.open()
    node = FakeNode(store)
    cluster = Cluster(node, store, "tcp://127.0.0.1:1/" + "k" * 40)  # type: ignore[arg-type]
    try:
        await writer.create_room(
            "r", [OpRecord(0, b"op", b"sig")],
            [MemberChange("alice", True, True), MemberChange("bob", True)],
            EpochRecord(0, 0, "alice"), [],
        )  # fmt: skip
        await cluster.start()
        await writer.put(writer.k_msg("r", 1), b"\x93\x01\xc1\xa1x")
        await writer.put(writer.k_head("r"), rec.enc.encode(rec.Head(1, 0)))
        await writer.append_messages([NewMessage("r", "alice", "txn-2", envelope("r", "txn-2"))])
        async with asyncio.timeout(10):
            while ("r", 2) not in node.pushed:
                node.changed.clear()
                await node.changed.wait()
        assert node.pushed == [("r", 2)]
        assert node.metrics.watch_undecodable._value.get() == 1
    finally:
        await cluster.stop()
        await store.close()
        await writer.close()
