"""First contact: a key first seen through the server is unverified wherever
it shows, an invite says so, and a room may keep its history from members
whose key nobody verified (docs/security.md, 4.10)."""

from __future__ import annotations

import pytest

from curvechat.client.errors import NotReady

from support.clients import ClientFactory
from support.servers import ServerProcess


def texts(client, room):  # type: ignore[no-untyped-def]
    return [r.text for r in client.cache.messages(room, limit=1000)]


async def test_unverified_first_contact_and_history_sharing(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    carol, carol_ev = await clients.make("carol", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before carol")

    # bob's key came from the directory: unverified everywhere it shows
    details = {m.user: m for m in alice.member_details("r")}
    assert details["alice"].verified and not details["bob"].verified
    assert not (await alice.key_info("bob")).verified

    # history for verified members only: carol (unverified) gets no old key,
    # and the inviter starts an epoch that includes her
    alice.set_history_sharing("r", "verified")
    epochs_before = set(alice.core.held("r"))
    result = await alice.invite("r", "carol")
    assert not result.verified and not result.shared_history
    assert len(result.safety_number.split()) == 12
    assert set(alice.core.held("r")) - epochs_before  # a new epoch
    await alice.send("r", "after carol")
    await carol_ev.until(lambda: texts(carol, "r") == [None, "after carol"])
    assert "no key for epoch 0" in (carol.cache.messages("r")[0].error or "")

    # once alice verified dave's key, dave gets the whole history
    dave, dave_ev = await clients.make("dave", server.connect)
    await alice.key_info("dave")  # first contact: pinned, unverified
    info = alice.verify_key("dave")
    assert info.verified
    result = await alice.invite("r", "dave")
    assert result.verified and result.shared_history
    await dave_ev.until(lambda: texts(dave, "r") == ["before carol", "after carol"])
    assert bob is not None

    # "all" (the default) shares history with anyone invited
    assert alice.history_sharing("r") == "verified"
    alice.set_history_sharing("r", "all")
    assert alice.history_sharing("r") == "all"
    with pytest.raises(NotReady) as bad:
        alice.set_history_sharing("r", "some")
    assert bad.value.code == "bad_value"


async def test_an_invite_the_rules_refuse_sends_no_key(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A non-admin's invite is refused by the client's own rules before any
    key packet for the invitee reaches the server (which could keep them)."""
    from curvechat.crypto.errors import MembershipError

    bob, _ = await clients.make("bob", server.connect)
    alice, alice_ev = await clients.make("alice", server.connect)
    await clients.make("mallory", server.connect)
    await bob.create_room("r", ["alice"])
    await alice_ev.until(lambda: "bob" in alice.members("r"))
    with pytest.raises(MembershipError) as refused:
        await alice.invite("r", "mallory")
    assert refused.value.code == "forbidden"
