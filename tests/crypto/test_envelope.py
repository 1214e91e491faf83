"""Message envelopes: round trips, padding, size limits and tampering."""

from __future__ import annotations

import msgspec
import nacl.bindings
import nacl.utils
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvechat.crypto import (
    BadSignature,
    CryptoError,
    DecryptError,
    Identity,
    Plaintext,
    associated_data,
    open_message,
    seal_message,
)
from curvechat.crypto.envelope import COMMIT_SIZE, DOMAIN_MSG, PAD_BLOCK, encrypt_body
from curvechat.protocol import decode_envelope, encode, limits
from curvechat.protocol.errors import ErrorCode, LocalProtocolError
from curvechat.protocol.messages import Envelope

# Module-level rather than fixtures: Hypothesis tests must not use
# function-scoped fixtures.
ALICE = Identity.generate("alice")
MALLORY = Identity.generate("mallory")
KEY = nacl.utils.random(32)
ROOM = "general"
OVERHEAD = COMMIT_SIZE + 16  # the key commitment and the AEAD tag
TXN = "txn-0001"


def seal(text: str = "hello", **kw: object) -> Envelope:
    args: dict[str, object] = {"room": ROOM, "epoch": 3, "key": KEY, "txn": TXN}
    args.update(kw)
    identity = args.pop("identity", ALICE)
    assert isinstance(identity, Identity)
    return seal_message(identity, plaintext=Plaintext(text=text, ts=1_700_000_000_000), **args)  # type: ignore[arg-type]


def open_(env: Envelope, key: bytes = KEY, pub: bytes = ALICE.sign_pub) -> Plaintext:
    return open_message(env, key=key, sender_sign_pub=pub)


def flip(data: bytes, i: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[i] ^= mask
    return bytes(out)


def resign(env: Envelope, signer: Identity) -> Envelope:
    """What a member holding the epoch key could do: re-sign altered fields."""
    ad = associated_data(env.room, env.epoch, env.sender, env.txn)
    sig = signer.sign(DOMAIN_MSG + ad + env.nonce + env.ct)
    return msgspec.structs.replace(env, sig=sig)


def test_round_trip() -> None:
    env = seal("hello")
    assert (env.room, env.epoch, env.sender, env.txn) == (ROOM, 3, "alice", TXN)
    assert len(env.nonce) == 24
    assert len(env.sig) == 64
    assert open_(env) == Plaintext(text="hello", ts=1_700_000_000_000, kind="text")


def test_envelope_survives_the_wire() -> None:
    env = seal("over the wire")
    again = decode_envelope(encode(env))
    assert again == env
    assert open_(again).text == "over the wire"


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text(max_size=2000), ts=st.integers(min_value=0, max_value=2**53))
def test_round_trip_any_text(text: str, ts: int) -> None:
    env = seal_message(
        ALICE, room=ROOM, epoch=0, key=KEY, txn=TXN, plaintext=Plaintext(text=text, ts=ts)
    )
    assert open_(env) == Plaintext(text=text, ts=ts)
    assert (len(env.ct) - OVERHEAD) % PAD_BLOCK == 0


@settings(max_examples=50, deadline=None, database=None)
@given(
    # any text UTF-8 can carry (lone surrogates cannot: see the next test)
    text=st.text(
        st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)), min_size=1, max_size=300
    ),
    room=st.sampled_from(["general", "r", "@alice:bob", "x" * 64]),
    epoch=st.integers(min_value=0, max_value=2**31),
    txn=st.from_regex(limits.TXN_RE, fullmatch=True),
)
def test_round_trip_any_context(text: str, room: str, epoch: int, txn: str) -> None:
    env = seal(text, room=room, epoch=epoch, txn=txn)
    assert decode_envelope(encode(env)) == env
    assert open_(env).text == text


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", "\udc80tail"])
def test_lone_surrogates_are_refused_with_a_code(text: str) -> None:
    with pytest.raises(LocalProtocolError) as refused:
        seal(text)
    assert refused.value.code == ErrorCode.BAD_FRAME


def test_padding_hides_length() -> None:
    lengths = {len(seal("x" * n).ct) for n in range(0, 200)}
    assert lengths == {PAD_BLOCK + OVERHEAD}
    assert len(seal("x" * 300).ct) == 2 * PAD_BLOCK + OVERHEAD


def test_padding_boundaries() -> None:
    # Whatever the body length, the padded length is the next multiple of the
    # block strictly above it, and opening gives the text back exactly.
    for n in range(200, 260):
        env = seal("y" * n)
        assert (len(env.ct) - OVERHEAD) % PAD_BLOCK == 0
        assert open_(env).text == "y" * n


def test_each_seal_uses_a_fresh_nonce() -> None:
    a, b = seal("same"), seal("same")
    assert a.nonce != b.nonce
    assert a.ct != b.ct


def test_longest_text_fits() -> None:
    text = "a" * limits.MAX_TEXT_CHARS
    assert open_(seal(text)).text == text


def test_text_too_long() -> None:
    with pytest.raises(LocalProtocolError) as info:
        seal("a" * (limits.MAX_TEXT_CHARS + 1))
    assert info.value.code == ErrorCode.TOO_LARGE


def test_longest_text_of_widest_characters_fits() -> None:
    # 4 UTF-8 bytes each: the text limit is set so that this still seals.
    text = "\U0001f600" * limits.MAX_TEXT_CHARS
    assert open_(seal(text)).text == text


def test_ciphertext_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard behind the text limit: with the old limit of 16,384
    # characters, 4 UTF-8 bytes each do not fit.
    monkeypatch.setattr(limits, "MAX_TEXT_CHARS", 16_384)
    with pytest.raises(LocalProtocolError) as info:
        seal("\U0001f600" * limits.MAX_TEXT_CHARS)
    assert info.value.code == ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    "kw",
    [
        {"room": "Not A Room"},
        {"room": "@bob:alice"},
        {"epoch": -1},
        {"epoch": 2**31 + 1},
        {"txn": "short"},
        {"txn": "has spaces in it"},
    ],
)
def test_invalid_fields_refused(kw: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        seal(**kw)  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.BAD_FRAME


def test_invalid_unicode_refused() -> None:
    with pytest.raises(LocalProtocolError):
        seal("lone \ud800 surrogate")


def test_negative_timestamp_refused() -> None:
    with pytest.raises(LocalProtocolError):
        seal_message(
            ALICE, room=ROOM, epoch=0, key=KEY, txn=TXN, plaintext=Plaintext(text="x", ts=-1)
        )


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(33)])
def test_key_length_checked(key: bytes) -> None:
    with pytest.raises(ValueError):
        seal(key=key)
    with pytest.raises(ValueError):
        open_(seal(), key=key)


def test_wrong_key() -> None:
    with pytest.raises(DecryptError):
        open_(seal(), key=nacl.utils.random(32))


def test_wrong_sender_key() -> None:
    with pytest.raises(BadSignature):
        open_(seal(), pub=MALLORY.sign_pub)


def test_every_flipped_ciphertext_byte_is_rejected() -> None:
    env = seal("")
    assert len(env.ct) == PAD_BLOCK + OVERHEAD
    rejected = 0
    for i in range(len(env.ct)):
        for mask in (0x01, 0x80, 0xFF):
            with pytest.raises(BadSignature):
                open_(msgspec.structs.replace(env, ct=flip(env.ct, i, mask)))
            rejected += 1
    assert rejected == 3 * len(env.ct)


def test_every_flipped_ciphertext_byte_fails_aead_even_if_resigned() -> None:
    # A member re-signing an altered ciphertext still cannot get it opened:
    # the AEAD tag catches it.
    env = seal("")
    for i in range(len(env.ct)):
        bad = resign(msgspec.structs.replace(env, ct=flip(env.ct, i)), ALICE)
        with pytest.raises(DecryptError):
            open_(bad)


def test_every_flipped_nonce_byte_is_rejected() -> None:
    env = seal("hi")
    for i in range(len(env.nonce)):
        bad = msgspec.structs.replace(env, nonce=flip(env.nonce, i))
        with pytest.raises(BadSignature):
            open_(bad)
        with pytest.raises(DecryptError):
            open_(resign(bad, ALICE))


def test_every_flipped_signature_byte_is_rejected() -> None:
    env = seal("hi")
    for i in range(len(env.sig)):
        with pytest.raises(BadSignature):
            open_(msgspec.structs.replace(env, sig=flip(env.sig, i)))


@pytest.mark.parametrize(
    "change",
    [
        {"room": "generam"},
        {"room": "@alice:bob"},
        {"epoch": 4},
        {"epoch": 2},
        {"sender": "mallory"},
        {"txn": "txn-0002"},
        {"txn": "txn-00010"},
    ],
)
def test_altered_associated_data_is_rejected(change: dict[str, object]) -> None:
    env = seal("hi")
    bad = msgspec.structs.replace(env, **change)
    with pytest.raises(BadSignature):
        open_(bad)
    # Even with a valid signature over the new fields (by the claimed sender,
    # who holds the epoch key too), the AEAD binding refuses it.
    signer = MALLORY if bad.sender == "mallory" else ALICE
    with pytest.raises(DecryptError):
        open_(resign(bad, signer), pub=signer.sign_pub)


def test_member_cannot_impersonate_another() -> None:
    # Mallory holds the epoch key and seals a message claiming to be alice:
    # her signature does not verify under alice's key.
    forged = seal("I am alice", identity=MALLORY)
    forged = resign(msgspec.structs.replace(forged, sender="alice"), MALLORY)
    with pytest.raises(BadSignature):
        open_(forged)


def _seal_raw(body: bytes) -> Envelope:
    """An envelope whose padded body is exactly `body` (validly signed)."""
    nonce = nacl.utils.random(24)
    ad = associated_data(ROOM, 3, "alice", TXN)
    ct = encrypt_body(body, ad, nonce, KEY)
    sig = ALICE.sign(DOMAIN_MSG + ad + nonce + ct)
    return Envelope(room=ROOM, epoch=3, sender="alice", txn=TXN, nonce=nonce, ct=ct, sig=sig)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes(PAD_BLOCK),  # no 0x80 marker
        msgspec.msgpack.encode(Plaintext(text="x", ts=0)) + b"\x80",  # not a full block
        msgspec.msgpack.encode(Plaintext(text="x", ts=0)).ljust(PAD_BLOCK, b"\x01"),
        (msgspec.msgpack.encode(Plaintext(text="x", ts=0)) + b"\x80").ljust(2 * PAD_BLOCK, b"\0"),
        b"\x80".ljust(PAD_BLOCK, b"\0"),  # empty body: not msgpack
        (b"\xc1" + b"\x80").ljust(PAD_BLOCK, b"\0"),
        (msgspec.msgpack.encode({"text": 1, "ts": 0}) + b"\x80").ljust(PAD_BLOCK, b"\0"),
        (msgspec.msgpack.encode({"text": "x", "ts": 0, "kind": "image"}) + b"\x80").ljust(
            PAD_BLOCK, b"\0"
        ),
        (msgspec.msgpack.encode({"text": "x", "ts": -5}) + b"\x80").ljust(PAD_BLOCK, b"\0"),
    ],
)
def test_garbage_bodies_are_decrypt_errors(body: bytes) -> None:
    with pytest.raises(DecryptError):
        open_(_seal_raw(body))


def test_well_formed_raw_body_opens() -> None:
    body = (msgspec.msgpack.encode(Plaintext(text="x", ts=0)) + b"\x80").ljust(PAD_BLOCK, b"\0")
    assert open_(_seal_raw(body)) == Plaintext(text="x", ts=0)


def test_errors_share_a_base() -> None:
    assert issubclass(BadSignature, CryptoError)
    assert issubclass(DecryptError, CryptoError)
