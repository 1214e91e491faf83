"""Accepting a changed identity key names the key accepted: the offered key
the user was shown, and compared out of band. A server that offers another
key between showing and accepting gets nothing pinned: the acceptance is
refused (`key_changed_again`) and the new key is what is shown next."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from curvechat.client import events as ev
from curvechat.client.errors import NotReady
from curvechat.crypto.identity import fingerprint

from .conftest import EvilServer
from .test_malicious_server import resync
from support.cli import in_a_room
from support.clients import ClientFactory


def new_key() -> bytes:
    return nacl.signing.SigningKey.generate().verify_key.encode()


async def test_accepting_pins_only_the_key_the_user_compared(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    real = bob.identity.sign_pub
    assert alice.cache.pin("bob") == real

    # The directory offers K1; alice is shown its safety number and compares it.
    k1 = new_key()
    evil.attack(substitute_key={"user": "bob", "key": k1.hex()})
    await resync(alice, alice_ev)
    shown = await alice.key_info("bob")
    assert shown.offered == k1 and shown.offered_fingerprint == fingerprint(k1)

    # Before she accepts, the server offers K2.
    k2 = new_key()
    evil.attack(substitute_key={"user": "bob", "key": k2.hex()})
    await resync(alice, alice_ev)
    assert [e.user for e in alice_ev.of(ev.KeyChangeDetected)] == ["bob", "bob"]

    with pytest.raises(NotReady) as refused:
        await alice.accept_key("bob", k1)  # what she compared
    assert refused.value.code == "key_changed_again"
    assert fingerprint(k2) in str(refused.value)
    assert alice.cache.pin("bob") == real  # nothing pinned
    assert alice.key_changes() == ["bob"]
    now = await alice.key_info("bob")
    assert now.offered == k2 and now.offered_fingerprint == fingerprint(k2)

    # Accepting the key now shown (after comparing it) pins that one.
    await alice.accept_key("bob", k2)
    assert alice.cache.pin("bob") == k2


async def test_accepting_a_key_when_none_is_offered_is_refused(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    await clients.make("bob", evil.connect)
    await alice.lookup(["bob"])
    before = alice.cache.pin("bob")
    with pytest.raises(NotReady) as refused:
        await alice.accept_key("bob", new_key())
    assert refused.value.code == "no_key_change"
    assert alice.cache.pin("bob") == before


def pinned(home: Path, user: str) -> bytes:
    db = sqlite3.connect(home / "cache.db")
    try:
        (key,) = db.execute("SELECT sign_pub FROM pins WHERE user=?", (user,)).fetchone()
    finally:
        db.close()
    return bytes(key)


def test_the_cli_refuses_a_fingerprint_the_offer_no_longer_has(
    evil: EvilServer, tmp_path: Path
) -> None:
    alice, _bob = in_a_room(evil, tmp_path, "r", "alice", "bob")
    real = pinned(alice.home, "bob")

    k1 = new_key()
    evil.attack(substitute_key={"user": "bob", "key": k1.hex()})
    listing = alice.run("keys", "bob", ok=False)
    assert listing.returncode == 1
    assert f"curvechat keys --accept bob {fingerprint(k1)}" in listing.stdout

    # The offer changes before alice runs the command she was shown.
    k2 = new_key()
    evil.attack(substitute_key={"user": "bob", "key": k2.hex()})
    refused = alice.run("keys", "--accept", "bob", *fingerprint(k1).split(), ok=False)
    assert refused.returncode == 1, refused.stderr
    assert "[fingerprint_mismatch]" in refused.stderr
    assert "nothing was accepted" in refused.stderr
    assert f"bob offers a new key: {fingerprint(k2)}" in refused.stdout  # the new one, shown
    assert f"curvechat keys --accept bob {fingerprint(k2)}" in refused.stderr
    assert pinned(alice.home, "bob") == real

    done = alice.run("keys", "--accept", "bob", fingerprint(k2))
    assert f"accepted the new key of bob: {fingerprint(k2)}" in done.stdout
    assert pinned(alice.home, "bob") == k2
