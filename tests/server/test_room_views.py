"""The node's room views (server/rooms.py) when its cache lets one go
while a membership change holds the room's lock: the view read again takes
the same lock, so the next change waits for the first. It used to get a new
lock: both ran at once, the later put back a view built before the other's
op, and the node kept it (a member just added refused for good, the room's
next op a conflict every time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from curvechat.crypto import wrap_epoch_key
from curvechat.protocol import messages as m
from curvechat.server import rooms as rooms_module
from curvechat.server.node import ChatNode
from curvechat.store import SQLiteStore
from curvechat.store.base import EpochRecord, PacketRecord, RoomRecord

from .test_error_codes import create_request
from .test_reactor import Peer
from support.nodes import running_node


class GatedEpochs(SQLiteStore):
    """A SQLite store whose new epochs wait while `gate` is closed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def add_epoch(
        self, room: str, epoch: EpochRecord, packets: Sequence[PacketRecord]
    ) -> RoomRecord:
        self.entered.set()
        await self.gate.wait()
        return await super().add_epoch(room, epoch, packets)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ChatNode]:
    store = GatedEpochs(tmp_path / "store.db")
    async with running_node(store) as chat:
        try:
            yield chat
        finally:
            store.gate.set()  # nothing left waiting when the node stops


async def test_a_view_let_go_during_a_change_keeps_the_rooms_lock(
    node: ChatNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = node.store
    assert isinstance(store, GatedEpochs) and node.endpoint is not None
    ctx = zmq.asyncio.Context()
    try:
        alice, bob, carol, dave = (
            Peer(ctx, node.endpoint, node.public_key, n) for n in ("alice", "bob", "carol", "dave")
        )
        for p in (alice, bob, carol, dave):
            await p.register()
        req, room = create_request(alice.identity, "general", [bob.identity])
        assert isinstance(await alice.request(req), m.RoomChanged)
        monkeypatch.setattr(rooms_module, "ROOMS_KEPT", 3)
        # bob starts a new epoch: it holds the room's lock while the store commits
        store.gate.clear()
        upload, _ = room.upload(bob.identity, 1)
        epoch_rid = await bob.send(m.NewEpoch(room=room.name, epoch=upload))
        await asyncio.wait_for(store.entered.wait(), 10)
        for i in range(3):  # dave's rooms push the view out meanwhile
            other, _ = create_request(dave.identity, f"other-{i}", [])
            assert isinstance(await dave.request(other), m.RoomChanged)
        assert node.rooms.peek(room.name) is None
        # alice adds carol: it waits for bob's change, then goes
        signed = room.op("add", alice.identity, carol.identity)
        packet = wrap_epoch_key(alice.identity, room.key, "carol", carol.identity.sign_pub)
        add_rid = await alice.send(m.AddMember(room=room.name, op=signed, packets=[packet]))
        await asyncio.sleep(0.2)
        store.gate.set()
        assert (await bob.reply()).rid == epoch_rid
        added = await alice.reply()
        assert added.rid == add_rid and isinstance(added.msg, m.RoomChanged), added
        room.applied(signed)
        view = node.rooms.peek(room.name)
        assert view is not None and view.state.index == view.record.op_head
        assert sorted(view.state.members) == sorted(await store.members(room.name))
        history = await carol.request(m.History(room=room.name, after=0, limit=10))
        assert isinstance(history, m.Messages), history
        promote = room.op("promote", alice.identity, bob.identity)
        assert isinstance(await alice.request(m.Promote(room=room.name, op=promote)), m.RoomChanged)
    finally:
        ctx.destroy(linger=0)


class SlowRead(SQLiteStore):
    """A SQLite store whose next room read, once `slow` is set, is made at
    once and returned only when `gate` opens: a read made before a change
    that comes back after it (as an etcd watch's reload can)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.slow = False
        self.gate = asyncio.Event()
        self.read = asyncio.Event()

    async def room(self, room: str) -> RoomRecord | None:
        record = await super().room(room)
        if self.slow:
            self.slow = False
            self.read.set()
            await self.gate.wait()
        return record


async def test_a_room_read_before_a_rotation_does_not_put_the_view_back(tmp_path: Path) -> None:
    """A reload whose read was made before a rotation, answered after it, kept
    the room's view from before it: the next rotation was refused as a
    `conflict` ("the next epoch is 1"). The view the handler put stays."""
    store = SlowRead(tmp_path / "store.db")
    async with running_node(store) as node:
        assert node.endpoint is not None
        ctx = zmq.asyncio.Context()
        try:
            alice, bob = (Peer(ctx, node.endpoint, node.public_key, n) for n in ("alice", "bob"))
            for p in (alice, bob):
                await p.register()
            req, room = create_request(alice.identity, "general", [bob.identity])
            assert isinstance(await alice.request(req), m.RoomChanged)
            store.slow = True
            reload = asyncio.create_task(node.rooms.reload(room.name))
            await asyncio.wait_for(store.read.wait(), 10)
            upload, _ = room.upload(alice.identity, 1)
            assert isinstance(
                await alice.request(m.NewEpoch(room=room.name, epoch=upload)), m.RoomChanged
            )
            store.gate.set()
            await reload
            view = node.rooms.peek(room.name)
            assert view is not None and view.record.epoch == 1
            upload, _ = room.upload(alice.identity, 2)
            again = await alice.request(m.NewEpoch(room=room.name, epoch=upload))
            assert isinstance(again, m.RoomChanged), again
        finally:
            store.gate.set()
            ctx.destroy(linger=0)
