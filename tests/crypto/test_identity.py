"""Identities: key derivation, signatures, transport binding, fingerprints and
safety numbers."""

from __future__ import annotations

import copy
import pickle
import re

import nacl.bindings
import nacl.signing
import pytest

from curvechat.crypto import (
    DOMAIN_TRANSPORT,
    BadSignature,
    Identity,
    box_pub_from_sign_pub,
    fingerprint,
    safety_number,
    transport_statement,
    verify,
)


@pytest.fixture
def alice() -> Identity:
    return Identity.generate("alice")


@pytest.fixture
def bob() -> Identity:
    return Identity.generate("bob")


def test_generate_gives_distinct_keys(alice: Identity) -> None:
    other = Identity.generate("alice")
    assert alice.user == "alice"
    assert alice.sign_pub != other.sign_pub
    assert alice.transport_pub != other.transport_pub
    for value in (
        alice.sign_seed,
        alice.sign_pub,
        alice.box_pub,
        alice.transport_secret,
        alice.transport_pub,
    ):
        assert isinstance(value, bytes)
        assert len(value) == 32


def test_from_secrets_round_trip(alice: Identity) -> None:
    again = Identity.from_secrets("alice", alice.sign_seed, alice.transport_secret)
    assert again.sign_pub == alice.sign_pub
    assert again.box_pub == alice.box_pub
    assert bytes(again.box_secret) == bytes(alice.box_secret)
    assert again.transport_pub == alice.transport_pub
    assert again.sign(b"x") == alice.sign(b"x")  # Ed25519 is deterministic


def test_keys_are_derived_as_documented(alice: Identity) -> None:
    assert alice.sign_pub == bytes(nacl.signing.SigningKey(alice.sign_seed).verify_key)
    assert alice.box_pub == nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(alice.sign_pub)
    assert alice.box_pub == box_pub_from_sign_pub(alice.sign_pub)
    assert bytes(alice.box_secret.public_key) == alice.box_pub
    assert alice.transport_pub == nacl.bindings.crypto_scalarmult_base(alice.transport_secret)
    # The transport key is independent of the identity key.
    assert alice.transport_pub != alice.box_pub


@pytest.mark.parametrize(
    ("seed", "transport"),
    [(bytes(31), bytes(32)), (bytes(33), bytes(32)), (bytes(32), bytes(31)), (b"", b"")],
)
def test_from_secrets_checks_lengths(seed: bytes, transport: bytes) -> None:
    with pytest.raises(ValueError, match="exactly"):
        Identity.from_secrets("alice", seed, transport)


def test_from_secrets_checks_types() -> None:
    with pytest.raises(TypeError):
        Identity.from_secrets("alice", "x" * 32, bytes(32))  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["", "Alice", "1alice", "a" * 33, "al ice", "@alice"])
def test_user_name_must_be_valid(user: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        Identity.generate(user)


def test_repr_hides_secrets(alice: Identity) -> None:
    text = repr(alice) + str(alice)
    assert "alice" in text
    assert fingerprint(alice.sign_pub) in text
    for secret in (alice.sign_seed, alice.transport_secret, bytes(alice.box_secret)):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_identity_is_immutable_and_not_picklable(alice: Identity) -> None:
    with pytest.raises(AttributeError):
        alice.user = "mallory"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        alice._user = "mallory"
    with pytest.raises(TypeError):
        pickle.dumps(alice)
    with pytest.raises(TypeError):
        copy.copy(alice)


def test_sign_and_verify(alice: Identity, bob: Identity) -> None:
    sig = alice.sign(b"hello")
    assert len(sig) == 64
    verify(alice.sign_pub, b"hello", sig)
    with pytest.raises(BadSignature):
        verify(alice.sign_pub, b"hellO", sig)
    with pytest.raises(BadSignature):
        verify(bob.sign_pub, b"hello", sig)


def test_verify_rejects_every_flipped_signature_byte(alice: Identity) -> None:
    sig = alice.sign(b"hello")
    for i in range(len(sig)):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        with pytest.raises(BadSignature):
            verify(alice.sign_pub, b"hello", bytes(bad))


@pytest.mark.parametrize(
    "key",
    [b"", bytes(31), bytes(33), bytes(32), bytes([1]) + bytes(31), "x" * 32],
)
def test_verify_malformed_key_is_bad_signature(alice: Identity, key: bytes) -> None:
    with pytest.raises(BadSignature):
        verify(key, b"hello", alice.sign(b"hello"))


@pytest.mark.parametrize("sig", [b"", bytes(63), bytes(65), bytes(64)])
def test_verify_malformed_signature(alice: Identity, sig: bytes) -> None:
    with pytest.raises(BadSignature):
        verify(alice.sign_pub, b"hello", sig)


@pytest.mark.parametrize("key", [bytes(32), bytes([1]) + bytes(31), bytes(31), b"\xff" * 32])
def test_box_pub_from_invalid_sign_pub(key: bytes) -> None:
    with pytest.raises(BadSignature):
        box_pub_from_sign_pub(key)


def test_transport_sig_binds_user_and_key(alice: Identity, bob: Identity) -> None:
    statement = transport_statement("alice", alice.transport_pub)
    assert statement.startswith(DOMAIN_TRANSPORT)
    verify(alice.sign_pub, statement, alice.transport_sig())
    with pytest.raises(BadSignature):
        verify(
            alice.sign_pub, transport_statement("bob", alice.transport_pub), alice.transport_sig()
        )
    with pytest.raises(BadSignature):
        verify(
            alice.sign_pub, transport_statement("alice", bob.transport_pub), alice.transport_sig()
        )
    with pytest.raises(ValueError):
        transport_statement("alice", bytes(31))


def test_fingerprint_format(alice: Identity, bob: Identity) -> None:
    fp = fingerprint(alice.sign_pub)
    assert re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){7}", fp)
    assert fp == fingerprint(alice.sign_pub)
    assert fp != fingerprint(bob.sign_pub)


def test_safety_number_is_symmetric(alice: Identity, bob: Identity) -> None:
    ab = safety_number("alice", alice.sign_pub, "bob", bob.sign_pub)
    ba = safety_number("bob", bob.sign_pub, "alice", alice.sign_pub)
    assert ab == ba
    assert re.fullmatch(r"\d{5}( \d{5}){11}", ab)


def test_safety_number_changes_with_either_key(alice: Identity, bob: Identity) -> None:
    before = safety_number("alice", alice.sign_pub, "bob", bob.sign_pub)
    new_bob = Identity.generate("bob")
    new_alice = Identity.generate("alice")
    assert safety_number("alice", alice.sign_pub, "bob", new_bob.sign_pub) != before
    assert safety_number("alice", new_alice.sign_pub, "bob", bob.sign_pub) != before
    # The half that belongs to the unchanged party stays the same, so a user
    # can see whose key changed.
    after = safety_number("alice", alice.sign_pub, "bob", new_bob.sign_pub)
    assert set(before.replace(" ", "")[i : i + 30] for i in (0, 30)) & set(
        after.replace(" ", "")[i : i + 30] for i in (0, 30)
    )


def test_safety_number_binds_names(alice: Identity, bob: Identity) -> None:
    before = safety_number("alice", alice.sign_pub, "bob", bob.sign_pub)
    assert safety_number("alice", alice.sign_pub, "carol", bob.sign_pub) != before
