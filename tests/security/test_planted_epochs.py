"""Key packets for epochs nobody made, planted by a malicious server with a
colluding member (current or former): a key for a far epoch number must
not become the room's current epoch (the client would ask every honest node
for the epoch after it, and could neither send, remove nor invite there
again), and a key planted for the next number must not make the client
refuse the key the room then uses (`client/trust/position.py`, and the
keys kept beside a held one in `TrustCore.feed_packets`)."""

from __future__ import annotations

import asyncio

import pytest

from curvechat.client.engine import ChatClient
from curvechat.client.errors import ClientError
from curvechat.client.model import CachedMessage
from curvechat.crypto.roomkeys import new_epoch_key, wrap_epoch_key
from curvechat.protocol import encode

from .conftest import EvilServer
from .test_malicious_server import resync
from support.clients import ClientFactory, Recorder

FAR = 1_000_000


async def _plant(evil: EvilServer, clients: ClientFactory, mallory_left: bool) -> ChatClient:
    alice, alice_ev = await clients.make("alice", evil.connect)
    await clients.make("bob", evil.connect)
    mallory, _ = await clients.make("mallory", evil.connect)
    ids = clients.identities
    await alice.create_room("r", ["bob", "mallory"])
    await alice.send("r", "hello", timeout=10)
    head = alice.core.log("r").index  # mallory is a member right after this op
    if mallory_left:
        await mallory.leave("r")
        await resync(alice, alice_ev)
    # mallory boxes a key for a far epoch, based on an op she was a member at
    forged = new_epoch_key("r", FAR, after_op=head)
    packet = wrap_epoch_key(ids["mallory"], forged, "alice", ids["alice"].sign_pub)
    evil.attack(
        inject_keys={"room": "r", "packets": [encode(packet).hex()]},
        report_epoch={"room": "r", "epoch": FAR},
    )
    await resync(alice, alice_ev)
    assert FAR in alice.core.held("r")  # filed: K1-K7 all pass
    # The server turns honest again (or alice fails over to an honest node).
    evil.attack()
    await resync(alice, alice_ev)
    return alice


@pytest.mark.parametrize("mallory_left", [False, True])
async def test_far_epoch_key_does_not_brick_sending(
    evil: EvilServer, clients: ClientFactory, mallory_left: bool
) -> None:
    alice = await _plant(evil, clients, mallory_left)
    try:
        await alice.send("r", "after the attack", timeout=15)
    except (ClientError, TimeoutError) as exc:
        pytest.fail(f"alice can no longer send in r ({exc!r}); held {sorted(alice.core.held('r'))}")


async def test_far_epoch_key_does_not_block_removing_the_colluder(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice = await _plant(evil, clients, False)
    try:
        await alice.remove("r", "mallory")
    except (ClientError, TimeoutError) as exc:
        pytest.fail(f"alice cannot remove mallory ({exc!r})")


async def _plant_next(
    evil: EvilServer, clients: ClientFactory, **bob_options: int
) -> tuple[ChatClient, Recorder, ChatClient, Recorder]:
    """mallory removed from r (epoch 1, without her), then a key of hers for
    epoch 2 served to alice, with epoch 2 reported as the room's."""
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect, **bob_options)
    await clients.make("mallory", evil.connect)
    ids = clients.identities
    await alice.create_room("r", ["bob", "mallory"])
    member_at = alice.core.log("r").index
    await alice.remove("r", "mallory")  # epoch 1, without mallory
    assert max(alice.core.held("r")) == 1
    forged = new_epoch_key("r", 2, after_op=member_at)
    packet = wrap_epoch_key(ids["mallory"], forged, "alice", ids["alice"].sign_pub)
    evil.attack(
        inject_keys={"room": "r", "packets": [encode(packet).hex()]},
        report_epoch={"room": "r", "epoch": 2},
    )
    await resync(alice, alice_ev)
    assert 2 in alice.core.held("r")
    return alice, alice_ev, bob, bob_ev


async def test_a_former_member_cannot_pre_empt_the_next_epoch(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """The same root (any unused epoch number is taken, and the first key
    filed stays, K7): a removed member plants the *next* epoch's number;
    when an honest member later makes that epoch, alice refuses the genuine
    packet and never reads what is said under it, from any node."""
    alice, alice_ev, bob, bob_ev = await _plant_next(evil, clients, rotate_after_messages=1)
    evil.attack()  # honest from now on
    await resync(bob, bob_ev)
    await bob.send("r", "one", timeout=10)
    await bob.send("r", "two, under epoch 2", timeout=10)  # bob rotates: epoch 2
    await resync(alice, alice_ev)
    rows = alice.cache.messages("r")
    texts = [r.text for r in rows if r.error is None]
    errors = [r.error for r in rows if r.error is not None]
    assert "two, under epoch 2" in texts, f"alice cannot read bob: {errors}"


async def test_a_split_row_opens_when_the_genuine_key_comes_in_a_later_connection(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """As above, but the node has no packet for alice when she asks for
    epoch 2's packets again (or her connection ends while she asks), so the
    row is stored unopened. In her next connection the pass over rows that
    did not open asks for it again, finds it sealed under another key
    again, and asks for the epoch's packets again: then it opens. Before,
    only a message just received made her ask, and the row stayed."""
    alice, alice_ev, bob, bob_ev = await _plant_next(evil, clients, rotate_after_messages=1)
    evil.attack(withhold_keys="alice")
    await resync(bob, bob_ev)
    await bob.send("r", "one", timeout=10)
    await bob.send("r", "two, under epoch 2", timeout=10)  # bob rotates: epoch 2

    def stored() -> list[CachedMessage]:
        return alice.cache.messages("r")

    async with asyncio.timeout(20):
        while len(stored()) < 2:
            await asyncio.sleep(0.05)
    assert stored()[1].error is not None and "KeyMismatch" in stored()[1].error
    evil.attack()  # honest from now on
    await resync(alice, alice_ev)
    assert [r.text for r in stored()] == ["one", "two, under epoch 2"]


async def test_far_epoch_key_does_not_block_invites(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice = await _plant(evil, clients, False)
    await clients.make("carol", evil.connect)
    try:
        await alice.invite("r", "carol")
    except (ClientError, TimeoutError) as exc:
        pytest.fail(f"alice cannot invite carol ({exc!r})")


async def test_a_key_planted_for_the_next_epoch_does_not_stop_sending(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """The server reports the planted epoch as the room's, then turns
    honest: alice's rotation past it is refused (the room's next epoch is
    that one), and she learns the room's epoch again from the node instead
    of failing the send."""
    alice, _alice_ev, _bob, _bob_ev = await _plant_next(evil, clients)
    assert alice.core.current("r") == 2  # mallory's key, and she is gone (E3)
    evil.attack()  # honest from now on, without a new listing for alice
    await alice.send("r", "still here", timeout=15)
    assert alice.core.current("r") in (1, 3)
