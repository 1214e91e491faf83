"""A direct-message room always holds both of its users: it cannot be made
without the other one, nor have them removed (its messages would reach no
one but the sender, shown as sent)."""

from __future__ import annotations

import pytest

from curvechat.client.errors import NotReady

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_a_dm_room_is_made_with_both_and_keeps_both(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    with pytest.raises(NotReady) as made_alone:
        await alice.create_room("@alice:bob", [])
    assert made_alone.value.code == "forbidden"
    room = await alice.open_dm("bob")
    assert room == "@alice:bob"
    with pytest.raises(NotReady) as removed:
        await alice.remove(room, "bob")
    assert removed.value.code == "forbidden"
    await alice.send(room, "are you there?")
    await bob_events.until(lambda: [m.text for m in bob.cache.messages(room)] == ["are you there?"])
