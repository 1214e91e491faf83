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
