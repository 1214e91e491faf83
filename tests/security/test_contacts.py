"""Who may put a user in a room. Anyone may make rooms of their own with any
registered user in them, so one account could fill a victim's
MAX_ROOMS_PER_USER places with rooms the victim never asked for (and
keep them out of new rooms). A user who takes rooms only from contacts
(`set_contacts`, server/contacts.py) is put in a room by nobody else:
not by a room created with them in it, not by an add, not by a
direct-message room; the refusal is `contacts_only` and nothing is
stored. Against a real node, with real client engines and a raw client
that skips the engine's own checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from curvechat.client.errors import NotReady, ServerRefused
from curvechat.crypto import sign_op
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_CONTACTS

from support.clients import ClientFactory
from support.raw import RawClient, Room
from support.servers import ServerProcess


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


async def test_only_contacts_put_a_user_in_a_room(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    carol, _ = await clients.make("carol", server.connect)

    got = await bob.contacts()
    assert (got.only, got.users) == (False, [])  # never set: anyone, as before
    await alice.create_room("before", ["bob"])

    got = await bob.set_contacts(only=True, add=["alice"])
    assert (got.only, got.users) == (True, ["alice"])
    for attempt in (
        carol.create_room("spam", ["bob"]),
        carol.create_room("spam2", ["alice", "bob"]),
        carol.open_dm("bob"),
    ):
        with pytest.raises(ServerRefused) as caught:
            await attempt
        assert caught.value.code == "contacts_only"
        assert "bob" in caught.value.message and "carol" in caught.value.message
    await carol.create_room("mine", ["alice"])
    with pytest.raises(ServerRefused) as caught:
        await carol.invite("mine", "bob")
    assert caught.value.code == "contacts_only"
    assert set(carol.members("mine")) == {"carol", "alice"}

    # a contact still may; so may bob himself, with anyone in it
    await alice.create_room("with-bob", ["bob"])
    assert await alice.open_dm("bob")
    await bob.create_room("bobs", ["carol"])

    rooms = await bob.parts.ask(m.ListRooms(), m.RoomList)
    assert sorted(r.room for r in rooms.rooms) == sorted(
        ["before", "with-bob", "bobs", "@alice:bob"]
    )

    # taken off the list: refused again; anyone: taken again
    await bob.set_contacts(remove=["alice"])
    with pytest.raises(ServerRefused) as caught:
        await alice.create_room("after", ["bob"])
    assert caught.value.code == "contacts_only"
    got = await bob.set_contacts(only=False)
    assert (got.only, got.users) == (False, [])
    await carol.invite("mine", "bob")
    assert "bob" in carol.members("mine")


async def test_a_contact_list_change_is_checked(
    server: ServerProcess, clients: ClientFactory
) -> None:
    bob, _ = await clients.make("bob", server.connect)
    await clients.make("alice", server.connect)
    for kwargs, code in (
        ({"add": ["nobody"]}, "no_such_user"),
        ({"add": ["alice"], "remove": ["alice"]}, "bad_frame"),
    ):
        with pytest.raises(ServerRefused) as caught:
            await bob.set_contacts(**kwargs)  # type: ignore[arg-type]
        assert caught.value.code == code, kwargs
    for kwargs, code in (  # refused before asking
        ({"add": ["bob"]}, "bad_name"),
        ({"add": [f"u{i}" for i in range(MAX_CONTACTS + 1)]}, "too_large"),
    ):
        with pytest.raises(NotReady) as refused:
            await bob.set_contacts(**kwargs)  # type: ignore[arg-type]
        assert refused.value.code == code
    assert (await bob.contacts()).users == []  # nothing of them was kept
    got = await bob.set_contacts(add=["alice", "alice"])
    assert got.users == ["alice"]
    got = await bob.set_contacts(remove=["carol"])  # not on the list: nothing to do
    assert got.users == ["alice"]


def test_a_raw_client_cannot_put_a_user_who_takes_only_contacts_in_a_room(
    server: ServerProcess, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Past the engine's checks: the node refuses the create and the add,
    and stores nothing of either."""
    bob, mallory = Identity.generate("bob"), Identity.generate("mallory")
    victim, spammer = RawClient(ctx, server.connect, bob), RawClient(ctx, server.connect, mallory)
    try:
        victim.register()
        spammer.register()
        oneself = victim.request(m.SetContacts(add=["bob"]))
        assert isinstance(oneself, m.Error) and oneself.code == "bad_frame", oneself
        reply = victim.request(m.SetContacts(only=True))
        assert isinstance(reply, m.ContactList) and reply.only, reply
        refused = spammer.request(Room(mallory, "spam", [bob]).create)
        assert isinstance(refused, m.Error) and refused.code == "contacts_only", refused
        own = Room(mallory, "own", [])
        assert isinstance(spammer.request(own.create), m.RoomChanged)
        op = sign_op(mallory, own.state.next_op("add", "mallory", "bob", bob.sign_pub, 1))
        refused = spammer.request(m.AddMember(room="own", op=op, packets=[]))
        assert isinstance(refused, m.Error) and refused.code == "contacts_only", refused
        listed = victim.request(m.ListRooms())
        assert isinstance(listed, m.RoomList) and listed.rooms == [], listed
        members = spammer.request(m.Members(room="own"))
        assert isinstance(members, m.MemberLog) and len(members.ops) == 1, members
        # each change rewrites the whole list: paced, 20 at once then 1 a second
        answers = [victim.request(m.SetContacts(only=i % 2 == 0)) for i in range(25)]
        limited = [a for a in answers if isinstance(a, m.Error)]
        assert limited and all(a.code == "rate_limited" for a in limited), limited
        assert len(limited) <= 25 - 18, limited  # (two changes were made above)
    finally:
        victim.close()
        spammer.close()
