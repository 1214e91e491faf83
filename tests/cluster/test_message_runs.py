"""A node writes message runs (store/etcd/runs.py) only while every live
node in the registry says it reads them: during a rolling upgrade the
older nodes' watch and history reads keep working (the Cluster layer
in-process, on a real etcd)."""

from __future__ import annotations

import msgspec

from curvechat.store import NewMessage
from curvechat.store.etcd import prefix_end
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.feed import NodeRegistry

from .test_relist import envelope, node_b, pushed, room_r
from support.etcd import EtcdCluster


async def test_runs_are_written_once_no_older_node_is_live(etcd3: EtcdCluster) -> None:
    async with node_b(etcd3) as (other, _node, cluster):
        store = cluster.store
        assert not store.message_runs
        # An older node's entry: it says nothing of runs.
        older = NodeRegistry(other, "a", ttl=10)
        entry = {"name": "a", "connect": "tcp://127.0.0.1:2/" + "j" * 40, "status": "up"}
        await older.register(msgspec.msgpack.encode({**entry, "started_ms": 0}))
        await cluster.start()
        await cluster.refresh_peers()
        assert [n.name for n in cluster.nodes] == ["a", "b"] and not store.message_runs
        await room_r(store)

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


async def test_a_value_the_node_cannot_decode_is_counted_and_the_next_pushed(
    etcd3: EtcdCluster,
) -> None:
    """One message value no node can read (a newer node's, or damaged) does
    not stop the node's watch: it is counted, and what follows is pushed."""
    async with node_b(etcd3) as (writer, node, cluster):
        await room_r(writer)
        await cluster.start()
        await writer.put(writer.k_msg("r", 1), b"\x93\x01\xc1\xa1x")
        await writer.put(writer.k_head("r"), rec.enc.encode(rec.Head(1, 0)))
        await writer.append_messages([NewMessage("r", "alice", "txn-2", envelope("r", "txn-2"))])
        await pushed(node, "r", 2)
        assert node.pushed == [("r", 2)]
        assert node.metrics.watch_undecodable._value.get() == 1


async def test_a_value_the_node_cannot_decode_is_left_out_of_history_reads(
    etcd3: EtcdCluster,
) -> None:
    """Reading past such a value failed the read, so every page holding it
    failed for every client: the room's history stopped there."""
    async with node_b(etcd3) as (writer, _node, _cluster):
        await room_r(writer)
        await writer.put(writer.k_msg("r", 1), b"\x93\x01\xc1\xa1x")
        await writer.put(writer.k_head("r"), rec.enc.encode(rec.Head(1, 0)))
        await writer.append_messages(
            [NewMessage("r", "alice", f"txn-{i}", envelope("r", f"txn-{i}")) for i in (2, 3)]
        )
        assert [r.seq for r in await writer.messages("r", after=0)] == [2, 3]
        assert [r.seq for r in await writer.messages("r", after=0, limit=1)] == [2]
        assert [r.seq for r in await writer.messages("r")] == [2, 3]
        assert [r.seq for r in await writer.messages("r", before=3)] == [2]
