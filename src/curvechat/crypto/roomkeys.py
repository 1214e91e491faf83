"""Epoch keys and the key packets that deliver them to members.

Each room has a sequence of epochs. An epoch key is 32 random bytes made by
one member, who boxes a copy for every member of the room at the membership
op `after_op` (`KeyPacket`, nacl.public.Box: X25519 from both parties'
identity keys, XSalsa20-Poly1305). Removing a member starts a new epoch whose
key the removed member never receives.

The server stores and forwards packets but cannot open them; it also chooses
which packet a client receives. So the boxed contents repeat the room, epoch
and recipient, and `unwrap_key_packet` refuses a packet whose outer fields
disagree with them: a packet cannot be replayed into another room or epoch,
or handed to someone else.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import nacl.exceptions
import nacl.public
import nacl.utils

from curvechat.crypto.errors import BadSignature, DecryptError
from curvechat.crypto.identity import Identity, box_pub_from_sign_pub
from curvechat.protocol.codec import encode
from curvechat.protocol.errors import UNDECODABLE
from curvechat.protocol.messages import KeyPacket

EPOCH_KEY_SIZE: Final = 32


class EpochKey(msgspec.Struct, frozen=True):
    """The symmetric key of one epoch of one room. `repr` hides the key.

    `after_op` is the index of the membership op the epoch starts after: its
    members are the room's members at that op.
    """

    room: str
    epoch: int
    after_op: int
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != EPOCH_KEY_SIZE:
            raise ValueError(f"an epoch key must be exactly {EPOCH_KEY_SIZE} bytes long")
        if not 0 <= self.epoch <= 2**31:
            raise ValueError(f"epoch out of range: {self.epoch}")
        if not 0 <= self.after_op <= 2**31:
            raise ValueError(f"after_op out of range: {self.after_op}")

    def __repr__(self) -> str:
        return f"EpochKey(room={self.room!r}, epoch={self.epoch}, after_op={self.after_op})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec's own rich repr would list every field, the key included.
        return [("room", self.room), ("epoch", self.epoch), ("after_op", self.after_op)]


# [room, epoch, after_op, key, recipient]
_Boxed = tuple[str, int, int, bytes, str]
_boxed_decoder = msgspec.msgpack.Decoder(_Boxed)


def new_epoch_key(room: str, epoch: int, after_op: int) -> EpochKey:
    return EpochKey(
        room=room, epoch=epoch, after_op=after_op, key=nacl.utils.random(EPOCH_KEY_SIZE)
    )


def _box(identity: Identity, peer_sign_pub: bytes) -> nacl.public.Box:
    peer = nacl.public.PublicKey(box_pub_from_sign_pub(peer_sign_pub))
    return nacl.public.Box(identity.box_secret, peer)


def wrap_epoch_key(
    identity: Identity, key: EpochKey, recipient: str, recipient_sign_pub: bytes
) -> KeyPacket:
    """Box `key` from `identity` to `recipient`.

    Raises `BadSignature` if `recipient_sign_pub` is not a valid Ed25519 key.
    """
    boxed = encode([key.room, key.epoch, key.after_op, key.key, recipient])
    return KeyPacket(
        room=key.room,
        epoch=key.epoch,
        recipient=recipient,
        sender=identity.user,
        box=bytes(_box(identity, recipient_sign_pub).encrypt(boxed)),
    )


def unwrap_key_packet(identity: Identity, packet: KeyPacket, sender_sign_pub: bytes) -> EpochKey:
    """Open a key packet addressed to `identity`.

    `sender_sign_pub` must be the identity key of `packet.sender`. Raises
    `DecryptError` if the packet is not for this identity, does not open
    (wrong sender key, altered box), or its contents disagree with its outer
    room, epoch or recipient.
    """
    if packet.recipient != identity.user:
        raise DecryptError(f"key packet is for {packet.recipient!r}, not {identity.user!r}")
    try:
        box = _box(identity, sender_sign_pub)
    except BadSignature as exc:
        raise DecryptError("key packet sender's key is not a valid Ed25519 key") from exc
    try:
        room, epoch, after_op, key, recipient = _boxed_decoder.decode(box.decrypt(packet.box))
    except (nacl.exceptions.CryptoError, *UNDECODABLE, ValueError, TypeError) as exc:
        raise DecryptError("key packet does not open") from exc
    if (room, epoch, recipient) != (packet.room, packet.epoch, packet.recipient):
        raise DecryptError("key packet contents do not match its room, epoch or recipient")
    try:
        return EpochKey(room=room, epoch=epoch, after_op=after_op, key=key)
    except ValueError as exc:
        raise DecryptError(f"key packet holds an invalid epoch key: {exc}") from exc
