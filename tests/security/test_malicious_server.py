"""A malicious server against honest clients: each attack of the threat model
(docs/security.md) tried for real, and what the clients do about it."""

from __future__ import annotations

import secrets
import sqlite3
import time

import nacl.signing
import pytest

from curvechat.client import events as ev
from curvechat.client.errors import KeyChanged, NotReady, ServerRefused
from curvechat.crypto.envelope import DOMAIN_MSG, Plaintext, _pad, associated_data, encrypt_body
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import DOMAIN_OP
from curvechat.protocol import encode
from curvechat.protocol import messages as m

from .conftest import EvilServer
from support.clients import ClientFactory


def texts(client, room):  # type: ignore[no-untyped-def]
    return [r.text for r in client.cache.messages(room, limit=10_000) if r.error is None]


async def resync(client, events) -> None:  # type: ignore[no-untyped-def]
    """Force a reconnection and wait for the sync that follows it."""
    before = len(events.of(ev.CaughtUp))
    client.conn.drop("test: resync")
    await events.until(lambda: len(events.of(ev.CaughtUp)) > before)


async def test_substituted_identity_key_is_noticed(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, alice_ev = await clients.make("alice", evil.connect)
    await clients.make("bob", evil.connect)
    dave, dave_ev = await clients.make("dave", evil.connect)
    await alice.create_room("r", ["bob", "dave"])
    await dave.history("r")
    packets_before = _packets_for(evil, "bob")

    fake = nacl.signing.SigningKey.generate().verify_key.encode()
    evil.attack(substitute_key={"user": "bob", "key": fake.hex()})
    for client, events in ((alice, alice_ev), (dave, dave_ev)):
        await resync(client, events)
        assert [e.user for e in events.of(ev.KeyChangeDetected)] == ["bob"]
        assert client.key_changes() == ["bob"]
        info = await client.key_info("bob")
        assert info.changed and info.offered_safety_number != info.safety_number
        # nothing goes to the substituted key, nor into a room bob is in
        with pytest.raises(KeyChanged):
            await client.send("r", "for bob's eyes")
        with pytest.raises(KeyChanged):
            await client.create_room(f"new-{client.me}", ["bob"])
    assert _packets_for(evil, "bob") == packets_before

    # The user accepts the change (after comparing safety numbers, in a real
    # case of a new key): sending resumes. Were the directory to flip back, that
    # would be one more change, and noticed as well.
    await alice.accept_key("bob", (await alice.key_info("bob")).offered)
    assert alice.key_changes() == []
    ack = await alice.send("r", "after accepting")
    assert isinstance(ack, m.SendAck)
    evil.attack()
    await resync(alice, alice_ev)
    assert alice.key_changes() == ["bob"]
    # Dave never accepted: with the pinned key back in the directory, his
    # pending change is dropped (he is told) and he can send to bob again.
    await resync(dave, dave_ev)
    assert dave.key_changes() == []
    assert any("pinned key of bob again" in p.message for p in dave_ev.of(ev.Problem))
    assert isinstance(await dave.send("r", "bob's key is the pinned one again"), m.SendAck)


def _packets_for(evil: EvilServer, user: str) -> int:
    db = sqlite3.connect(evil.data / "curvechat.db")
    try:
        return int(
            db.execute("SELECT COUNT(*) FROM packets WHERE recipient=?", (user,)).fetchone()[0]
        )
    finally:
        db.close()


async def test_injected_member_gets_no_key(evil: EvilServer, clients: ClientFactory) -> None:
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    eve, _ = await clients.make("eve", evil.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before the attack")
    await bob_ev.until(lambda: texts(bob, "r") == ["before the attack"])

    # The server forges "alice adds eve": it cannot sign as alice.
    state = alice.core.log("r").state
    forged = m.MemberOp(
        room="r",
        index=state.index + 1,
        prev=state.head,
        kind="add",
        actor="alice",
        target="eve",
        target_key=eve.identity.sign_pub,
        ts=int(time.time() * 1000),
    )
    op_bytes = encode(forged)
    signed = m.SignedOp(op=op_bytes, sig=eve.identity.sign(DOMAIN_OP + op_bytes))
    evil.attack(inject_member={"room": "r", "op": signed.op.hex(), "sig": signed.sig.hex()})
    for client, events in ((alice, alice_ev), (bob, bob_ev)):
        await resync(client, events)
        assert any("membership log rejected" in p.message for p in events.of(ev.Problem))
        assert "eve" not in client.members("r")
    # Members keep talking; every key goes only to the verified members.
    evil.attack()
    await alice.remove("r", "bob")  # a rotation: packets for the members alice verified
    await alice.send("r", "after the attack")
    assert _packets_for(evil, "eve") == 0
    assert eve.cache.epoch_keys("r") == {}
    # eve, even reading the store directly, has no key to open anything
    db = sqlite3.connect(evil.data / "curvechat.db")
    rows = db.execute("SELECT envelope FROM messages WHERE room='r'").fetchall()
    db.close()
    assert len(rows) == 2


async def test_replayed_and_reordered_envelopes(evil: EvilServer, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await clients.close(bob)
    sent = [f"message {i}" for i in range(10)]
    for text in sent:
        await alice.send("r", text)
    evil.attack(replay=True, reorder=True)
    bob, _ = await clients.make("bob", evil.connect)
    rows = bob.cache.messages("r", limit=100)
    assert texts(bob, "r") == sent  # in seq order, each once
    assert [r.seq for r in rows] == list(range(1, 12))
    replayed = rows[-1]
    assert replayed.text is None and replayed.error == "replay of message 1"


async def test_dropped_pushes_are_detected_and_filled(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    evil.attack(drop_pushes=True)
    for i in range(5):
        await alice.send("r", f"dropped {i}")
    assert texts(bob, "r") == []
    evil.attack()
    await alice.send("r", "delivered")
    await bob_ev.until(lambda: len(texts(bob, "r")) == 6)
    assert texts(bob, "r") == [*(f"dropped {i}" for i in range(5)), "delivered"]


FLIPS = [
    *({"field": "ct", "bit": b} for b in (0, 7, 100, 1000, 2047)),
    *({"field": "nonce", "bit": b} for b in (0, 95, 191)),
    *({"field": "sig", "bit": b} for b in (0, 255, 511)),
    {"field": "epoch"},
    {"field": "sender", "value": "carol"},
    {"field": "txn"},
    {"field": "room", "value": "other"},
]


async def test_tampered_envelopes_are_all_rejected(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    await clients.make("carol", evil.connect)
    await alice.create_room("r", ["carol"])
    await alice.create_room("other", ["carol"])
    sent = [f"m{i}" for i in range(20)]
    for text in sent:
        await alice.send("r", text)
    shown = 0
    for n, flip in enumerate(FLIPS):
        evil.attack(flip=flip)
        carol, _ = await clients.make("carol", evil.connect, home_name=f"carol-{n}")
        rows = carol.cache.messages("r", limit=100)
        assert len(rows) == len(sent), flip
        shown += sum(r.text is not None for r in rows)
        assert all(r.error for r in rows), (flip, rows[0])
        await clients.close(carol)
    assert shown == 0  # 100% of 20 x 15 tampered envelopes rejected
    evil.attack()
    carol, _ = await clients.make("carol", evil.connect, home_name="carol-honest")
    assert texts(carol, "r") == sent  # the control: untampered, all open


async def test_member_cannot_forge_another_member(evil: EvilServer, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    mallory, _ = await clients.make("mallory", evil.connect)
    await alice.create_room("r", ["bob", "mallory"])
    await mallory.history("r")
    await bob.history("r")
    evil.attack(allow_forged_sender=True)
    current = await mallory.outbox.current_epoch("r")
    epoch, key = current.epoch, current.key
    env = forge(mallory.identity, "alice", "r", epoch, key, "I, alice, resign")
    ack = await mallory.conn.request(m.Send(envelope=env))
    assert isinstance(ack, m.SendAck)  # the colluding server stored it
    await bob_ev.until(lambda: bob.cache.has_message("r", ack.seq))
    (row,) = [r for r in bob.cache.messages("r") if r.seq == ack.seq]
    assert row.sender == "alice" and row.text is None
    assert row.error is not None and "verify" in row.error


def forge(
    identity: Identity, claimed: str, room: str, epoch: int, key: bytes, text: str
) -> m.Envelope:
    """An envelope that says `claimed` sent it, made by `identity` with the
    real room key: everything right but the signature."""
    txn = secrets.token_urlsafe(16)
    ad = associated_data(room, epoch, claimed, txn)
    nonce = secrets.token_bytes(24)
    body = _pad(encode(Plaintext(text=text, ts=int(time.time() * 1000))))
    ct = encrypt_body(body, ad, nonce, key)
    sig = identity.sign(DOMAIN_MSG + ad + nonce + ct)
    return m.Envelope(room=room, epoch=epoch, sender=claimed, txn=txn, nonce=nonce, ct=ct, sig=sig)


async def test_key_change_blocks_invites_too(evil: EvilServer, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    await clients.make("bob", evil.connect)
    await alice.create_room("r", [])
    await alice.lookup(["bob"])  # pinned
    fake = nacl.signing.SigningKey.generate().verify_key.encode()
    evil.attack(substitute_key={"user": "bob", "key": fake.hex()})
    with pytest.raises(KeyChanged):
        await alice.invite("r", "bob")
    assert "bob" not in alice.members("r")
    with pytest.raises(NotReady):
        await alice.accept_key("carol", fake)  # nothing pending for carol


async def test_an_ack_at_another_messages_seq_fails_the_send_and_hides_nothing(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await bob.send("r", "from bob")
    await alice_ev.until(lambda: texts(alice, "r") == ["from bob"])
    (bobs,) = alice.cache.messages("r")
    evil.attack(ack_seq=bobs.seq)
    with pytest.raises(ServerRefused) as refused:
        await alice.send("r", "mine")
    assert refused.value.code == "bad_ack"
    assert alice_ev.of(ev.SendFailed)[-1].code == "bad_ack"
    # Bob's message keeps its place; alice's is neither stored in its place nor lost
    # unseen: it failed, and the copy the server really stored comes with the next sync.
    assert [(r.seq, r.sender, r.text) for r in alice.cache.messages("r")] == [
        (bobs.seq, "bob", "from bob")
    ]
    assert alice.pending("r") == []
    evil.attack()
    await resync(alice, alice_ev)
    assert texts(alice, "r") == ["from bob", "mine"]


async def test_an_ack_naming_another_txn_fails_the_send(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    await alice.create_room("r", [])
    evil.attack(ack_txn="A" * 22)
    with pytest.raises(ServerRefused) as refused:
        await alice.send("r", "mine")
    assert refused.value.code == "bad_ack"
    assert texts(alice, "r") == []
