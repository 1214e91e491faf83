"""A ciphertext that authenticates under two epoch keys, and why a message
commits to its key.

Poly1305 does not commit to its key. A member who starts an epoch chooses
its key, and boxes a copy for each member: she can box a different key to
each, and craft one ciphertext whose tag holds under both (the free block
below is solved for, a linear equation mod 2^130 - 5). Signed by her, such
a message would open under each key as a different body. The envelope's
signed key commitment makes every member who opens a message hold the key
its sender sealed it under.

The ciphertext is made by `support.salamander`, whose written-out ChaCha20
and Poly1305 are checked against libsodium first.
"""

from __future__ import annotations

import secrets

import nacl.bindings
import pytest

from curvechat.crypto import DecryptError, Identity, KeyMismatch, Uncommitted
from curvechat.crypto.envelope import (
    COMMIT_SIZE,
    DOMAIN_MSG,
    associated_data,
    key_commitment,
    open_message,
)
from curvechat.protocol.messages import Envelope

from support.salamander import poly_key, tag, two_key_ciphertext

MALLORY = Identity.generate("mallory")
ROOM, EPOCH, TXN = "general", 7, "txn-0001"


def _envelope(ct: bytes, nonce: bytes) -> Envelope:
    ad = associated_data(ROOM, EPOCH, "mallory", TXN)
    sig = MALLORY.sign(DOMAIN_MSG + ad + nonce + ct)
    return Envelope(room=ROOM, epoch=EPOCH, sender="mallory", txn=TXN, nonce=nonce, ct=ct, sig=sig)


def test_the_written_out_steps_agree_with_libsodium() -> None:
    key, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    ad, body = secrets.token_bytes(21), secrets.token_bytes(64)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, ad, nonce, key)
    r, s = poly_key(key, nonce)
    assert tag(r, s, ad, sealed[:-16]) == sealed[-16:]


@pytest.fixture(scope="module")
def split() -> tuple[bytes, bytes, bytes, bytes]:
    """Two keys for one epoch, a nonce, and one AEAD ciphertext valid under both."""
    key1, key2, nonce = secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(24)
    ad = associated_data(ROOM, EPOCH, "mallory", TXN)
    return key1, key2, nonce, two_key_ciphertext(key1, key2, nonce, ad)


def test_one_aead_ciphertext_opens_under_two_keys_as_two_bodies(
    split: tuple[bytes, bytes, bytes, bytes],
) -> None:
    key1, key2, nonce, aead = split
    ad = associated_data(ROOM, EPOCH, "mallory", TXN)
    aead_open = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    body1, body2 = aead_open(aead, ad, nonce, key1), aead_open(aead, ad, nonce, key2)
    assert body1 != body2


def test_without_a_commitment_it_is_refused_under_either_key(
    split: tuple[bytes, bytes, bytes, bytes],
) -> None:
    key1, key2, nonce, aead = split
    env = _envelope(aead, nonce)  # the first format: signed, no commitment
    for key in (key1, key2):
        with pytest.raises(Uncommitted):
            open_message(env, key=key, sender_sign_pub=MALLORY.sign_pub)


def test_with_the_commitment_only_the_committed_key_gets_past_it(
    split: tuple[bytes, bytes, bytes, bytes],
) -> None:
    key1, key2, nonce, aead = split
    env = _envelope(key_commitment(key1, nonce) + aead, nonce)
    assert len(env.ct) == COMMIT_SIZE + 256 + 16
    with pytest.raises(KeyMismatch):
        open_message(env, key=key2, sender_sign_pub=MALLORY.sign_pub)
    # Under key1 it passes the commitment and the tag; the random body is
    # then no plaintext, which is a DecryptError but not a KeyMismatch.
    with pytest.raises(DecryptError) as refused:
        open_message(env, key=key1, sender_sign_pub=MALLORY.sign_pub)
    assert not isinstance(refused.value, KeyMismatch | Uncommitted)
    # (random bytes: not padded, or once in about 256 runs padded but no plaintext)
    assert "not correctly padded" in str(refused.value) or "not a valid" in str(refused.value)
