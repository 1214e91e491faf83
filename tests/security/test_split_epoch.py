"""A member who splits an epoch's keys, with an honest server.

mallory starts epoch 1 of a room with alice and bob, and boxes one key to
alice and herself and another to bob. She then sends one ciphertext that
authenticates under both keys (`support.salamander`), signed by her, in both
message formats. Without a key commitment it would open for alice and for
bob as two different bodies. With it, bob (who holds the other key) is told
the epoch's keys were split, by whom it could be, for mallory's message and
for the message alice then sends honestly; the first format is refused by
both.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import zmq

from curvechat.client import events as ev
from curvechat.crypto import new_epoch_key, wrap_epoch_key
from curvechat.crypto.envelope import DOMAIN_MSG, associated_data, key_commitment
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import EpochKey
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.raw import RawClient, Room
from support.salamander import two_key_ciphertext
from support.servers import ServerProcess


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _crafted(mallory: Identity, k1: bytes, k2: bytes, *, committed: bool) -> m.Send:
    txn, nonce = secrets.token_hex(8), secrets.token_bytes(24)
    ad = associated_data("split", 1, "mallory", txn)
    ct = two_key_ciphertext(k1, k2, nonce, ad)
    if committed:
        ct = key_commitment(k1, nonce) + ct
    sig = mallory.sign(DOMAIN_MSG + ad + nonce + ct)
    env = m.Envelope(room="split", epoch=1, sender="mallory", txn=txn, nonce=nonce, ct=ct, sig=sig)
    return m.Send(envelope=env)


async def test_split_epoch_keys_are_told_and_no_message_opens_two_ways(
    server: ServerProcess, clients: ClientFactory, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    alice, alice_events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    mallory = Identity.generate("mallory")
    raw = RawClient(ctx, server.connect, mallory)
    raw.register()
    room = Room(mallory, "split", [alice.identity, bob.identity])
    assert isinstance(raw.request(room.create), m.RoomChanged)
    after_op = 2  # the creation and two adds
    k1, k2 = new_epoch_key("split", 1, after_op), secrets.token_bytes(32)
    packets = [
        wrap_epoch_key(mallory, k1, "alice", alice.identity.sign_pub),
        wrap_epoch_key(mallory, k1, "mallory", mallory.sign_pub),
        wrap_epoch_key(
            mallory,
            EpochKey(room="split", epoch=1, after_op=after_op, key=k2),
            "bob",
            bob.identity.sign_pub,
        ),
    ]
    upload = m.EpochUpload(epoch=1, after_op=after_op, packets=packets)
    assert isinstance(raw.request(m.NewEpoch(room="split", epoch=upload)), m.RoomChanged)
    for committed in (False, True):
        assert isinstance(
            raw.request(_crafted(mallory, k1.key, k2, committed=committed)), m.SendAck
        )
    raw.close()

    await alice_events.until(lambda: "split" in [r.room for r in alice.rooms()])
    ack = await alice.send("split", "hello from alice", timeout=20)
    assert isinstance(ack, m.SendAck)

    def rows(client: object) -> list[tuple[str, str | None, str | None]]:
        shown = client.cache.messages("split", limit=100)  # type: ignore[attr-defined]
        return [(r.sender, r.text, r.error) for r in shown]

    await bob_events.until(lambda: len(rows(bob)) == 3, timeout=30)
    (first, crafted, honest) = rows(bob)
    # The first format: refused for its format, whatever the key.
    assert first[1] is None and first[2] is not None and "Uncommitted" in first[2]
    # The committed copy, and alice's honest message: the keys were split.
    for sender, text, error in (crafted, honest):
        assert text is None and error is not None, (sender, error)
        assert "KeyMismatch" in error and "for epoch 1 than the one mallory gave you" in error
    assert crafted[2] is not None and "mallory signed it under another key" in crafted[2]
    assert honest[0] == "alice" and honest[2] is not None
    assert "split, by alice, by mallory, or by whoever mallory had it from" in honest[2]
    told = [e.message for e in bob_events.of(ev.Problem) if "another key" in e.message]
    held = "under another key for epoch 1 than the one mallory gave you"
    assert sorted(told) == [
        f"alice sealed a message {held}: the epoch's keys were split, by alice, by mallory, "
        "or by whoever mallory had it from",
        f"mallory sealed a message {held}: mallory signed it under another key (or over "
        "nothing), or the server handed you a key of an attempt of mallory's it did not take",
    ], told

    # alice holds the committed key: the crafted copy passes the commitment
    # and the tag, and its body (random under her key) is no plaintext; her
    # own message opens. Nothing opened as two texts.
    await alice_events.until(lambda: len(rows(alice)) == 3, timeout=30)
    (a_first, a_crafted, a_honest) = rows(alice)
    assert "Uncommitted" in (a_first[2] or "")
    assert a_crafted[1] is None and "KeyMismatch" not in (a_crafted[2] or "KeyMismatch")
    assert a_honest[1] == "hello from alice"

    # bob's next message starts a new epoch (E5), with one key for everyone:
    # alice reads it, and her next message is sealed under it.
    ack = await bob.send("split", "after the split", timeout=20)
    assert isinstance(ack, m.SendAck)
    await alice_events.until(lambda: rows(alice)[-1][1] == "after the split", timeout=30)
    ack = await alice.send("split", "healed", timeout=20)
    assert isinstance(ack, m.SendAck)
    await bob_events.until(lambda: rows(bob)[-1][1] == "healed", timeout=30)
    assert max(bob.core.held("split")) == 2
