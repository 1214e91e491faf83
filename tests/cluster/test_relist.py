"""A node whose watch revision was compacted re-lists from the store instead of
skipping what it missed (the Cluster layer in-process, on a real etcd)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from curvechat.protocol import encode
from curvechat.protocol import messages as m
from curvechat.server.cluster import Cluster
from curvechat.server.metrics import NodeMetrics
from curvechat.server.rooms import RoomCache
from curvechat.store import EpochRecord, MemberChange, NewMessage, OpRecord, StoredRow
from curvechat.store.etcd import EtcdStore

from support.etcd import EtcdCluster


class FakeNode:
    """What Cluster uses of a ChatNode: its rooms, its online users and
    connections, pushes."""

    def __init__(self, store: EtcdStore) -> None:
        self.boot = "node-b"
        self.node_name = "b"
        self.rooms = RoomCache(store)
        self.by_user: dict[str, set[bytes]] = {"bob": {b"conn"}}
        self.sessions: dict[bytes, Any] = {}  # counted for the registry entry
        self.pushed: list[tuple[str, int]] = []
        self.changed = asyncio.Event()
        self.metrics = NodeMetrics()
        self.peers: list[str] = []
        self.peer_nodes: list[dict[str, Any]] = []
        self.draining = False

    async def push_remote(self, rows: list[StoredRow]) -> int:
        self.pushed += [(row.room, row.seq) for row in rows]
        self.changed.set()
        return len(rows)

    def push(self, users: list[str], msg: Any, *, skip: bytes | None = None) -> int:
        return 0


def envelope(room: str, txn: str) -> bytes:
    env = m.Envelope(
        room=room, epoch=0, sender="alice", txn=txn, nonce=b"n" * 24, ct=b"c" * 16, sig=b"s" * 64
    )
    return encode(env)


@contextlib.asynccontextmanager
async def node_b(etcd: EtcdCluster) -> AsyncIterator[tuple[EtcdStore, FakeNode, Cluster]]:
    """Node B's Cluster layer in-process (not started yet), and node A's
    store ("the writer") on the same fresh prefix."""
    prefix = f"/t-{uuid.uuid4().hex}/"
    endpoints = etcd.endpoints.split(",")
    writer, reader = EtcdStore(endpoints, prefix=prefix), EtcdStore(endpoints, prefix=prefix)
    await writer.open()
    await reader.open()
    node = FakeNode(reader)
    cluster = Cluster(node, reader, "tcp://127.0.0.1:1/" + "k" * 40)  # type: ignore[arg-type]
    try:
        yield writer, node, cluster
    finally:
        await cluster.stop()
        await reader.close()
        await writer.close()


async def room_r(store: EtcdStore) -> None:
    """Room r: alice's, bob (online on node B) a member."""
    await store.create_room(
        "r",
        [OpRecord(0, b"op", b"sig")],
        [MemberChange("alice", True, True), MemberChange("bob", True)],
        EpochRecord(0, 0, "alice"),
        [],
    )


async def pushed(node: FakeNode, room: str, seq: int) -> None:
    """Until `node` pushed `room`'s message `seq` (20 s at most)."""
    async with asyncio.timeout(20):
        while (room, seq) not in node.pushed:
            node.changed.clear()
            await node.changed.wait()


async def test_compacted_watch_relists(etcd3: EtcdCluster) -> None:
    async with node_b(etcd3) as (writer, node, cluster):
        reader = cluster.store
        await room_r(writer)
        await writer.append_messages(
            [NewMessage("r", "alice", "txn-0000", envelope("r", "txn-0000"))]
        )
        # B was cut off at this revision; A goes on; etcd compacts past it.
        cut_at = await reader.current_revision()
        for i in range(1, 6):
            await writer.append_messages(
                [NewMessage("r", "alice", f"txn-000{i}", envelope("r", f"txn-000{i}"))]
            )
        etcd3.compact()
        await cluster.start(from_revision=cut_at)
        await pushed(node, "r", 6)
        assert cluster.relists == 1
        # And it watches on from there: the next message comes live.
        await writer.append_messages(
            [NewMessage("r", "alice", "txn-0006", envelope("r", "txn-0006"))]
        )
        await pushed(node, "r", 7)
        assert node.pushed == [("r", 6), ("r", 7)]
        registry = node.metrics.registry
        assert registry.get_sample_value("curvechat_cluster_relists_total") == 1
        # only the live one has a watch lag: the re-listed one may be old
        assert registry.get_sample_value("curvechat_cluster_watch_lag_seconds_count") == 1
