"""A room holds at most MAX_MEMBERS members: a new epoch carries its key
boxed for every member in one request, at most MAX_BATCH packets, so a
room past that could never start another, and since any member's leave
asks for one, nobody could send in it again. The node refuses the add
that would pass the bound (`too_large`), and the client does not ask."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from curvechat.client.errors import NotReady
from curvechat.crypto import new_epoch_key, sign_op, wrap_epoch_key
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_BATCH, MAX_MEMBERS

from support.clients import ClientFactory
from support.raw import RawClient, Room
from support.servers import ServerProcess


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_the_add_past_the_most_a_room_holds_is_refused(
    server: ServerProcess, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    assert MAX_MEMBERS <= MAX_BATCH
    alice = Identity.generate("alice")
    puppets = [Identity.generate(f"p{i}") for i in range(MAX_MEMBERS)]
    raw = RawClient(ctx, server.connect, alice)
    try:
        raw.register()
        for who in puppets:
            other = RawClient(ctx, server.connect, who)
            other.register()
            other.close()
        room = Room(alice, "big", puppets[: MAX_MEMBERS - 1])
        assert isinstance(raw.request(room.create, timeout=30), m.RoomChanged)
        state = room.state
        last = puppets[-1]
        op = sign_op(alice, state.next_op("add", "alice", last.user, last.sign_pub, 1))
        refused = raw.request(m.AddMember(room="big", op=op, packets=[]))
        assert isinstance(refused, m.Error) and refused.code == "too_large", refused
        assert f"{MAX_MEMBERS} members" in refused.message
        # a full room still starts epochs: a key for every member fits one request
        key = new_epoch_key("big", 1, state.index)
        packets = [wrap_epoch_key(alice, key, u, mem.key) for u, mem in state.members.items()]
        assert len(packets) == MAX_MEMBERS
        upload = m.EpochUpload(epoch=1, after_op=state.index, packets=packets)
        assert isinstance(raw.request(m.NewEpoch(room="big", epoch=upload)), m.RoomChanged)
    finally:
        raw.close()


async def test_the_client_does_not_make_a_room_past_the_bound(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    with pytest.raises(NotReady) as caught:
        await alice.create_room("big", [f"u{i}" for i in range(MAX_MEMBERS)])
    assert caught.value.code == "too_large"
