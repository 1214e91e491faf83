"""Sealing and opening chat messages: `Plaintext` <-> `Envelope`.

A message is encrypted with XChaCha20-Poly1305 under the room's current epoch
key, with ``(room, epoch, sender, txn)`` as associated data; the ciphertext
starts with a commitment to that key (keyed BLAKE2b of the nonce); and all
of it is signed by the sender's identity key over the associated data, nonce
and ciphertext.

* The AEAD tag proves the message came from someone holding the epoch key,
  i.e. a member of that epoch, and binds it to its room, epoch, sender and
  transaction id: a ciphertext moved to another context does not open.
* The signature proves *which* member sent it. Members share the epoch key,
  so without it any member could write in another's name.
* The key commitment makes a ciphertext open under one key only. Poly1305
  does not commit to its key: a member who starts an epoch and boxes a
  different key to each member could craft one signed ciphertext that opens
  as different texts under each key. With the commitment signed, every
  member who opens it holds the key the sender sealed it under, and a
  member given another key is told so (`KeyMismatch`). Messages of the
  first format, without the commitment, are refused (`Uncommitted`):
  nothing tells an honest old one from such a crafted one.

Bodies are padded to a multiple of 256 bytes so the ciphertext length tells
the server little about the length of the text.
"""

from __future__ import annotations

import hmac
from hashlib import blake2b
from typing import Annotated, Final, Literal

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.utils
from msgspec import Meta

from curvechat.crypto.errors import DecryptError, KeyMismatch, Uncommitted
from curvechat.crypto.identity import Identity, verify
from curvechat.protocol import limits
from curvechat.protocol.codec import encode
from curvechat.protocol.errors import UNDECODABLE, ErrorCode, LocalProtocolError
from curvechat.protocol.messages import Envelope

DOMAIN_MSG: Final = b"curvechat/msg/v1\x00"
DOMAIN_KEY_COMMIT: Final = b"curvechat/key-commit/v1\x00"
PAD_BLOCK: Final = 256
COMMIT_SIZE: Final = 32

KEY_SIZE: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_SIZE: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_SIZE: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES


class Plaintext(msgspec.Struct, frozen=True):
    """What a message says, as only the room's members see it.

    `ts` is the sender's clock in milliseconds; the server's timestamp is on
    the stored message, outside the envelope. The bounds below are checked
    when a received body is decoded, so a peer cannot deliver what an honest
    client would refuse to send (for the text, any client since the first:
    `MAX_OPENED_TEXT_CHARS`; today's send `MAX_TEXT_CHARS`).
    """

    text: Annotated[str, Meta(max_length=limits.MAX_OPENED_TEXT_CHARS)]
    ts: Annotated[int, Meta(ge=0, le=2**53)]
    kind: Literal["text"] = "text"


_plaintext_decoder = msgspec.msgpack.Decoder(Plaintext)


def associated_data(room: str, epoch: int, sender: str, txn: str) -> bytes:
    """The envelope fields the ciphertext is bound to, as msgpack."""
    return encode([room, epoch, sender, txn])


def _signed_bytes(ad: bytes, nonce: bytes, ct: bytes) -> bytes:
    # ad is self-delimiting msgpack and the nonce has a fixed length, so the
    # concatenation is unambiguous.
    return DOMAIN_MSG + ad + nonce + ct


def _padded_length(n: int) -> int:
    # ISO/IEC 7816-4 always adds the 0x80 marker, so one byte is always added.
    return (n + 1 + PAD_BLOCK - 1) // PAD_BLOCK * PAD_BLOCK


def _pad(body: bytes) -> bytes:
    return body + b"\x80" + bytes(_padded_length(len(body)) - len(body) - 1)


def _unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    # Strict: exactly what _pad produces, nothing else, so the encoding of a
    # given plaintext is unique.
    if (
        not stripped
        or stripped[-1] != 0x80
        or len(padded) % PAD_BLOCK != 0
        or len(padded) != _padded_length(len(stripped) - 1)
    ):
        raise DecryptError("message body is not correctly padded")
    return stripped[:-1]


def key_commitment(key: bytes, nonce: bytes) -> bytes:
    """What a ciphertext starts with: BLAKE2b-256 keyed with the epoch key,
    of the domain and the nonce. Two keys giving the same value would be a
    BLAKE2b collision."""
    return blake2b(DOMAIN_KEY_COMMIT + nonce, key=key, digest_size=COMMIT_SIZE).digest()


def encrypt_body(padded: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """The `ct` of an envelope: the key commitment, then the AEAD ciphertext
    of the padded body."""
    aead = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, ad, nonce, key)
    return key_commitment(key, nonce) + aead


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"the epoch key must be exactly {KEY_SIZE} bytes long")


def seal_message(
    identity: Identity,
    *,
    room: str,
    epoch: int,
    key: bytes,
    txn: str,
    plaintext: Plaintext,
) -> Envelope:
    """Encrypt and sign `plaintext` for `room` under the epoch key `key`.

    Raises `LocalProtocolError` with `TOO_LARGE` if the text is longer than
    `MAX_TEXT_CHARS` (any shorter text fits `MAX_CIPHERTEXT_BYTES`),
    and with `BAD_FRAME` if room, epoch, txn or ts are not valid on the wire.
    """
    _check_key(key)
    if not limits.is_room_id(room):
        raise LocalProtocolError(ErrorCode.BAD_FRAME, f"not a valid room id: {room!r}")
    if not (isinstance(epoch, int) and 0 <= epoch <= 2**31):
        raise LocalProtocolError(ErrorCode.BAD_FRAME, f"epoch out of range: {epoch!r}")
    if limits.TXN_RE.fullmatch(txn) is None:
        raise LocalProtocolError(ErrorCode.BAD_FRAME, f"not a valid transaction id: {txn!r}")
    if not (0 <= plaintext.ts <= 2**53):
        raise LocalProtocolError(ErrorCode.BAD_FRAME, f"timestamp out of range: {plaintext.ts}")
    if len(plaintext.text) > limits.MAX_TEXT_CHARS:
        raise LocalProtocolError(
            ErrorCode.TOO_LARGE,
            f"message of {len(plaintext.text):,} characters; the limit is {limits.TEXT_LIMIT}",
        )
    try:
        body = encode(plaintext)
    except UnicodeEncodeError as exc:
        # Lone surrogates: Python allows them in str, UTF-8 does not.
        raise LocalProtocolError(ErrorCode.BAD_FRAME, "text is not valid Unicode") from exc
    ct_len = COMMIT_SIZE + _padded_length(len(body)) + TAG_SIZE
    # Unreachable for a text within MAX_TEXT_CHARS (see `limits`): a guard.
    if ct_len > limits.MAX_CIPHERTEXT_BYTES:
        raise LocalProtocolError(
            ErrorCode.TOO_LARGE,
            f"message of {ct_len} encrypted bytes (at most {limits.MAX_CIPHERTEXT_BYTES})",
        )
    sender = identity.user
    ad = associated_data(room, epoch, sender, txn)
    # 24 random bytes: XChaCha's nonce is long enough that random nonces
    # never repeat in practice, with no counter to keep in sync among senders.
    nonce = nacl.utils.random(NONCE_SIZE)
    ct = encrypt_body(_pad(body), ad, nonce, key)
    return Envelope(
        room=room,
        epoch=epoch,
        sender=sender,
        txn=txn,
        nonce=nonce,
        ct=ct,
        sig=identity.sign(_signed_bytes(ad, nonce, ct)),
    )


def open_message(envelope: Envelope, *, key: bytes, sender_sign_pub: bytes) -> Plaintext:
    """Verify and decrypt an envelope.

    `sender_sign_pub` must be the identity key of `envelope.sender` as the
    caller knows it; the signature covers the sender's name, so a signature
    by one member cannot pass for another's.

    The signature is checked first (`BadSignature`), so that nothing from an
    unauthenticated sender reaches the decryptor; then the format
    (`Uncommitted`: the first one, without a key commitment) and the key
    commitment (`KeyMismatch`: the sender sealed it under another key for
    this epoch than `key`); then the ciphertext is decrypted and decoded
    (`DecryptError`, of which both are kinds).
    """
    _check_key(key)
    ad = associated_data(envelope.room, envelope.epoch, envelope.sender, envelope.txn)
    ct = envelope.ct
    verify(sender_sign_pub, _signed_bytes(ad, envelope.nonce, ct), envelope.sig)
    if len(ct) % PAD_BLOCK == TAG_SIZE % PAD_BLOCK:
        raise Uncommitted(
            "sealed in the first message format, without a key commitment: refused, "
            "as a member could make such a message read differently for each member"
        )
    if len(ct) % PAD_BLOCK != (COMMIT_SIZE + TAG_SIZE) % PAD_BLOCK:
        raise DecryptError("message ciphertext has a length no sealing gives")
    if not hmac.compare_digest(ct[:COMMIT_SIZE], key_commitment(key, envelope.nonce)):
        raise KeyMismatch("sealed under another key for this epoch than the one held")
    try:
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct[COMMIT_SIZE:], ad, envelope.nonce, key
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptError("message does not decrypt under this epoch key") from exc
    try:
        return _plaintext_decoder.decode(_unpad(padded))
    except UNDECODABLE as exc:
        raise DecryptError(f"message body is not a valid plaintext: {exc}") from exc
