"""The field types and the payload structs every wire message is built
from (an `Envelope`, a signed membership op, a key packet, a room's
info...), each with its constraints (lengths, patterns, ranges) checked
while decoding. `curvechat.protocol.messages` puts them into requests,
replies and pushes; `curvechat.protocol.peer` into the peer protocol.

This module must never do I/O or hold secrets.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from curvechat.protocol import limits as L

User = Annotated[str, Meta(pattern=L.USER_PATTERN, max_length=L.MAX_NAME_LEN)]
Room = Annotated[str, Meta(pattern=L.ROOM_PATTERN, max_length=2 * L.MAX_NAME_LEN + 2)]
Txn = Annotated[str, Meta(pattern=L.TXN_PATTERN, max_length=L.MAX_TXN_LEN)]
Key32 = Annotated[bytes, Meta(min_length=32, max_length=32)]
Sig64 = Annotated[bytes, Meta(min_length=64, max_length=64)]
Nonce24 = Annotated[bytes, Meta(min_length=24, max_length=24)]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
StoredSeq = Annotated[int, Meta(ge=1, le=2**53)]
"""The sequence number of a stored message: a room's first is 1 (0, as a
head or a cursor, is "none yet")."""
Epoch = Annotated[int, Meta(ge=0, le=2**31)]
OpIndex = Annotated[int, Meta(ge=0, le=2**31)]
Millis = Annotated[int, Meta(ge=0, le=2**53)]
RequestId = Annotated[int, Meta(ge=1, le=2**53)]
Limit = Annotated[int, Meta(ge=1, le=L.MAX_PAGE)]
ShortText = Annotated[str, Meta(max_length=500)]
OpKind = Literal["create", "add", "remove", "leave", "promote"]


class Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of all wire structs: immutable, and strict about unknown fields."""


def check_room(room: str) -> None:
    if room.startswith("@") and L.dm_members(room) is None:
        raise ValueError(f"not a canonical direct-message room id: {room!r}")


# --- payload types -------------------------------------------------------


class Envelope(Wire, frozen=True):
    """One encrypted, signed message. The server sees only these fields.

    `ct` is a commitment to the room's epoch key and then the XChaCha20-Poly1305
    ciphertext of the sender's `Plaintext` under it; (room, epoch, sender,
    txn) are its associated data and `sig` is the sender's Ed25519 signature
    over all of it.
    """

    room: Room
    epoch: Epoch
    sender: User
    txn: Txn
    nonce: Nonce24
    ct: Annotated[bytes, Meta(min_length=16, max_length=L.MAX_CIPHERTEXT_BYTES)]
    sig: Sig64

    def __post_init__(self) -> None:
        check_room(self.room)


class MemberOp(Wire, array_like=True, frozen=True):
    """One entry of a room's membership log, before signing.

    `prev` is the hash of the previous entry's `SignedOp` (32 zero bytes for the
    genesis `create`), which chains the log. `target_key` is the target's
    Ed25519 identity key as the actor vouches for it.
    """

    room: Room
    index: OpIndex
    prev: Key32
    kind: OpKind
    actor: User
    target: User
    target_key: Key32
    ts: Millis

    def __post_init__(self) -> None:
        check_room(self.room)


class SignedOp(Wire, frozen=True):
    """A msgpack-encoded `MemberOp` and the actor's signature over it."""

    op: Annotated[bytes, Meta(max_length=L.MAX_OP_BYTES)]
    sig: Sig64


class KeyPacket(Wire, frozen=True):
    """An epoch key sealed by `sender` for `recipient` (crypto_box)."""

    room: Room
    epoch: Epoch
    recipient: User
    sender: User
    box: Annotated[bytes, Meta(min_length=40, max_length=L.MAX_BOX_BYTES)]

    def __post_init__(self) -> None:
        check_room(self.room)


class EpochUpload(Wire, frozen=True):
    """A new epoch of a room, based on membership op `after_op`, with its key
    packets for the members of that moment."""

    epoch: Epoch
    after_op: OpIndex
    packets: Annotated[list[KeyPacket], Meta(max_length=L.MAX_BATCH)]


class StoredMessage(Wire, frozen=True):
    """A committed message: its per-room sequence number and server timestamp."""

    seq: StoredSeq
    ts: Millis
    envelope: Envelope


class SignedRecord(Wire, frozen=True):
    """A peer's announcement (`curvechat.protocol.peer.PeerRecord`, msgpack)
    and its author's identity signature over it. Opaque to the server, which
    keeps the newest one per user while it runs."""

    record: Annotated[bytes, Meta(max_length=512)]
    sig: Sig64


class UserKeys(Wire, frozen=True):
    user: User
    sign_pub: Key32
    peer: SignedRecord | None = None
    """Where the user listens for peers, if it announced it to this node."""


class RoomInfo(Wire, frozen=True):
    room: Room
    head: Seq
    epoch: Epoch
    op_head: OpIndex
    members: int

    def __post_init__(self) -> None:
        check_room(self.room)
