"""A room holds at most MAX_MEMBERS members: a new epoch carries its key
boxed for every member in one request, at most MAX_BATCH packets, so a
room past that could never start another, and since any member's leave
asks for one, nobody could send in it again. The node refuses the add
that would pass the bound (`too_large`), and the client does not ask.

A user is in at most MAX_ROOMS_PER_USER rooms: anyone may add anyone to
rooms of their own, and a user's list of rooms is one reply; 11,000 rooms
made a list larger than a client takes, so the victim's client never
became ready again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from curvechat.client.errors import NotReady
from curvechat.crypto import new_epoch_key, sign_op, wrap_epoch_key
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_BATCH, MAX_MEMBERS, MAX_ROOMS_PER_USER

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


def _create_all(raw: RawClient, rooms: list[Room], window: int = 200) -> None:
    """Send the creates `window` at a time; every one must be made."""
    pending = 0
    for room in rooms:
        raw.send(room.create)
        pending += 1
        while pending >= window or (room is rooms[-1] and pending):
            reply = raw.recv(30)
            if isinstance(reply, m.Pong):
                continue
            assert isinstance(reply, m.RoomChanged), reply
            pending -= 1


def test_a_user_is_in_at_most_the_most_rooms_and_still_lists_them(
    server: ServerProcess, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    vic = Identity.generate("vic")
    spammers = [Identity.generate(f"spam{i}") for i in range(5)]
    raws = [RawClient(ctx, server.connect, who) for who in [vic, *spammers]]
    try:
        for raw in raws:
            raw.register()
        each = MAX_ROOMS_PER_USER // len(spammers)
        for n, (raw, who) in enumerate(zip(raws[1:], spammers, strict=True)):
            _create_all(raw, [Room(who, f"s{n}-{i}", [vic]) for i in range(each)])
        spam = raws[1]
        refused = spam.request(Room(spammers[0], "one-more", [vic]).create, timeout=30)
        assert isinstance(refused, m.Error) and refused.code == "too_large", refused
        assert f"vic is in {MAX_ROOMS_PER_USER:,} rooms" in refused.message
        alone = Room(spammers[0], "alone", [])  # the spammer's own: not refused
        assert isinstance(spam.request(alone.create, timeout=30), m.RoomChanged)
        op = sign_op(spammers[0], alone.state.next_op("add", "spam0", "vic", vic.sign_pub, 1))
        refused = spam.request(m.AddMember(room="alone", op=op, packets=[]), timeout=30)
        assert isinstance(refused, m.Error) and refused.code == "too_large", refused
        # vic's rooms still come in one reply a client takes
        raws[0].send(m.ListRooms())
        listed = raws[0].recv(30)
        while isinstance(listed, m.Pong):  # (its confirmations of the pushes' marks)
            listed = raws[0].recv(30)
        assert isinstance(listed, m.RoomList) and len(listed.rooms) == MAX_ROOMS_PER_USER
    finally:
        for raw in raws:
            raw.close()
