"""Every decoder in `protocol` and `crypto` fed arbitrary input: nothing but
the documented error types ever comes out."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvechat.crypto.envelope import open_message
from curvechat.crypto.errors import CryptoError
from curvechat.crypto.identity import Identity
from curvechat.crypto.keyfile import load_identity
from curvechat.crypto.membership import MemberState
from curvechat.crypto.roomkeys import unwrap_key_packet
from curvechat.protocol import (
    RemoteProtocolError,
    decode_envelope,
    decode_member_op,
    decode_request,
    decode_server_frame,
)
from curvechat.protocol import messages as m

FAST = settings(
    max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
ALICE = Identity.generate("alice")
KEY = bytes(32)
blob = st.binary(max_size=600)


@FAST
@given(blob)
def test_protocol_decoders(data: bytes) -> None:
    for decode in (decode_request, decode_server_frame, decode_member_op, decode_envelope):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


@FAST
@given(
    st.binary(min_size=16, max_size=600),
    st.binary(min_size=24, max_size=24),
    st.binary(min_size=64, max_size=64),
    st.integers(0, 2**31),
)
def test_open_message(ct: bytes, nonce: bytes, sig: bytes, epoch: int) -> None:
    env = m.Envelope(
        room="r", epoch=epoch, sender="alice", txn="abcdefgh", nonce=nonce, ct=ct, sig=sig
    )
    with contextlib.suppress(CryptoError):
        open_message(env, key=KEY, sender_sign_pub=ALICE.sign_pub)


@FAST
@given(st.binary(min_size=40, max_size=512), st.binary(min_size=32, max_size=32))
def test_unwrap_key_packet(box: bytes, sender_key: bytes) -> None:
    packet = m.KeyPacket(room="r", epoch=0, recipient="alice", sender="bob", box=box)
    with contextlib.suppress(CryptoError):
        unwrap_key_packet(ALICE, packet, sender_key)


@FAST
@given(st.binary(max_size=1100), st.binary(min_size=64, max_size=64))
def test_membership_apply(op: bytes, sig: bytes) -> None:
    with contextlib.suppress(CryptoError):
        MemberState.empty("r").apply(m.SignedOp(op=op, sig=sig))


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(blob)
def test_load_identity(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "identity.key"
        path.write_bytes(data)
        path.chmod(0o600)
        with contextlib.suppress(CryptoError):
            load_identity(path, b"passphrase")


def test_a_valid_key_really_opens() -> None:
    """The control: these decoders do accept what is valid."""
    signer = nacl.signing.SigningKey.generate()
    assert len(signer.verify_key.encode()) == 32
    from curvechat.crypto.envelope import Plaintext, seal_message

    env = seal_message(
        ALICE, room="r", epoch=0, key=KEY, txn="abcdefgh", plaintext=Plaintext(text="hi", ts=1)
    )
    assert open_message(env, key=KEY, sender_sign_pub=ALICE.sign_pub).text == "hi"


def _nested(depth: int) -> bytes:
    """A frame head `{"v": 1, "rid": 7, "req": ...}` whose `req` is `depth`
    arrays deep: deeper than the interpreter's recursion limit."""
    return bytes.fromhex("83a17601a372696407a3726571") + b"\x91" * depth + b"\xc0"


def test_values_nested_too_deeply_are_refused_like_any_bad_input() -> None:
    from curvechat.protocol import peer as p
    from curvechat.protocol.codec import peek_request_id

    deep = _nested(100_000)
    for decode in (decode_request, decode_server_frame, decode_member_op, decode_envelope):
        with pytest.raises(RemoteProtocolError) as refused:
            decode(deep)
        assert refused.value.code == "bad_frame"
    assert peek_request_id(deep) == 0
    with pytest.raises(RemoteProtocolError):
        p.decode_ask(deep)


def test_a_plaintext_nested_too_deeply_does_not_open() -> None:
    """A member's message whose body, once decrypted, holds an unknown field
    nested deeper than the recursion limit: refused like any bad body."""
    from curvechat.crypto.envelope import _pad, _signed_bytes, associated_data, encrypt_body

    body = b"\x83\xa4text\xa1x\xa2ts\x01\xa2zz" + b"\x91" * 60_000 + b"\xc0"
    ad = associated_data("r", 0, "alice", "abcdefgh")
    nonce = bytes(24)
    ct = encrypt_body(_pad(body), ad, nonce, KEY)
    env = m.Envelope(
        room="r",
        epoch=0,
        sender="alice",
        txn="abcdefgh",
        nonce=nonce,
        ct=ct,
        sig=ALICE.sign(_signed_bytes(ad, nonce, ct)),
    )
    with pytest.raises(CryptoError):
        open_message(env, key=KEY, sender_sign_pub=ALICE.sign_pub)
