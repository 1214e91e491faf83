"""Epoch keys and key packets."""

from __future__ import annotations

import msgspec
import nacl.public
import pytest

from curvechat.crypto import (
    DecryptError,
    EpochKey,
    Identity,
    new_epoch_key,
    unwrap_key_packet,
    wrap_epoch_key,
)
from curvechat.crypto.identity import box_pub_from_sign_pub
from curvechat.protocol import encode
from curvechat.protocol.codec import decode_request
from curvechat.protocol.messages import ClientFrame, EpochUpload, KeyPacket, NewEpoch

ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")
CAROL = Identity.generate("carol")


@pytest.fixture
def key() -> EpochKey:
    return new_epoch_key("general", 2, 7)


@pytest.fixture
def packet(key: EpochKey) -> KeyPacket:
    return wrap_epoch_key(ALICE, key, "bob", BOB.sign_pub)


def flip(data: bytes, i: int) -> bytes:
    out = bytearray(data)
    out[i] ^= 0x01
    return bytes(out)


def test_new_epoch_key(key: EpochKey) -> None:
    assert (key.room, key.epoch, key.after_op) == ("general", 2, 7)
    assert len(key.key) == 32
    assert new_epoch_key("general", 2, 7).key != key.key


def test_repr_hides_key(key: EpochKey) -> None:
    text = repr(key) + str(key) + repr([key])
    assert "general" in text
    assert key.key.hex() not in text
    assert repr(key.key) not in text
    assert all(name != "key" for name, _ in key.__rich_repr__())


@pytest.mark.parametrize(
    "kw",
    [
        {"key": bytes(31)},
        {"key": bytes(33)},
        {"epoch": -1},
        {"after_op": -1},
    ],
)
def test_epoch_key_checks(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"room": "general", "epoch": 0, "after_op": 0, "key": bytes(32)}
    args.update(kw)
    with pytest.raises(ValueError):
        EpochKey(**args)  # type: ignore[arg-type]


def test_wrap_and_unwrap(key: EpochKey, packet: KeyPacket) -> None:
    assert (packet.room, packet.epoch, packet.recipient, packet.sender) == (
        "general",
        2,
        "bob",
        "alice",
    )
    assert unwrap_key_packet(BOB, packet, ALICE.sign_pub) == key


def test_packet_survives_the_wire(key: EpochKey) -> None:
    # A whole frame is decoded, so the packet meets every wire constraint.
    packets = [wrap_epoch_key(ALICE, key, u.user, u.sign_pub) for u in (ALICE, BOB, CAROL)]
    frame = ClientFrame(v=1, rid=1, req=NewEpoch(room="general", epoch=EpochUpload(2, 7, packets)))
    decoded = decode_request(encode(frame))
    assert decoded == frame
    assert isinstance(decoded.req, NewEpoch)
    for ident, p in zip((ALICE, BOB, CAROL), decoded.req.epoch.packets, strict=True):
        assert unwrap_key_packet(ident, p, ALICE.sign_pub) == key


def test_wrap_for_self(key: EpochKey) -> None:
    packet = wrap_epoch_key(ALICE, key, "alice", ALICE.sign_pub)
    assert unwrap_key_packet(ALICE, packet, ALICE.sign_pub) == key


def test_dm_room_and_large_numbers() -> None:
    key = new_epoch_key("@" + "a" * 32 + ":" + "b" * 32, 2**31, 2**31)
    packet = wrap_epoch_key(ALICE, key, "b" * 32, BOB.sign_pub)
    assert len(packet.box) <= 512
    bob = Identity.from_secrets("b" * 32, BOB.sign_seed, BOB.transport_secret)
    assert unwrap_key_packet(bob, packet, ALICE.sign_pub) == key


def test_wrong_recipient_cannot_unwrap(packet: KeyPacket) -> None:
    with pytest.raises(DecryptError):
        unwrap_key_packet(CAROL, packet, ALICE.sign_pub)
    # Even with the packet readdressed to carol, her key does not open it.
    readdressed = msgspec.structs.replace(packet, recipient="carol")
    with pytest.raises(DecryptError):
        unwrap_key_packet(CAROL, readdressed, ALICE.sign_pub)


def test_same_name_other_key_cannot_unwrap(packet: KeyPacket) -> None:
    impostor = Identity.generate("bob")
    with pytest.raises(DecryptError):
        unwrap_key_packet(impostor, packet, ALICE.sign_pub)


def test_wrong_sender_key(packet: KeyPacket) -> None:
    with pytest.raises(DecryptError):
        unwrap_key_packet(BOB, packet, CAROL.sign_pub)
    with pytest.raises(DecryptError):
        unwrap_key_packet(BOB, packet, bytes(32))


@pytest.mark.parametrize(
    "change", [{"room": "random"}, {"room": "generam"}, {"epoch": 3}, {"epoch": 1}]
)
def test_altered_outer_fields_are_rejected(packet: KeyPacket, change: dict[str, object]) -> None:
    with pytest.raises(DecryptError, match="do not match"):
        unwrap_key_packet(BOB, msgspec.structs.replace(packet, **change), ALICE.sign_pub)


def test_altered_sender_is_rejected(packet: KeyPacket) -> None:
    # The caller looks up the claimed sender's key; it does not open the box.
    moved = msgspec.structs.replace(packet, sender="carol")
    with pytest.raises(DecryptError):
        unwrap_key_packet(BOB, moved, CAROL.sign_pub)


def test_every_flipped_box_byte_is_rejected(packet: KeyPacket) -> None:
    for i in range(len(packet.box)):
        bad = msgspec.structs.replace(packet, box=flip(packet.box, i))
        with pytest.raises(DecryptError):
            unwrap_key_packet(BOB, bad, ALICE.sign_pub)


def test_truncated_box_is_rejected(packet: KeyPacket) -> None:
    for n in range(40, len(packet.box)):
        bad = msgspec.structs.replace(packet, box=packet.box[:n])
        with pytest.raises(DecryptError):
            unwrap_key_packet(BOB, bad, ALICE.sign_pub)


def _box_raw(payload: object, room: str = "general", epoch: int = 2) -> KeyPacket:
    box = nacl.public.Box(
        ALICE.box_secret, nacl.public.PublicKey(box_pub_from_sign_pub(BOB.sign_pub))
    )
    return KeyPacket(
        room=room,
        epoch=epoch,
        recipient="bob",
        sender="alice",
        box=bytes(box.encrypt(encode(payload))),
    )


@pytest.mark.parametrize(
    "payload",
    [
        ["general", 2, 7, bytes(32)],  # too short
        ["general", 2, 7, bytes(31), "bob"],  # short key
        ["general", 2, -1, bytes(32), "bob"],  # bad after_op
        ["general", 2, 7, bytes(32), "carol"],  # other recipient
        ["general", 2, 7, "key", "bob"],
        {"room": "general"},
    ],
)
def test_bad_boxed_contents(payload: object) -> None:
    with pytest.raises(DecryptError):
        unwrap_key_packet(BOB, _box_raw(payload), ALICE.sign_pub)


def test_good_raw_box_opens() -> None:
    got = unwrap_key_packet(BOB, _box_raw(["general", 2, 7, bytes(32), "bob"]), ALICE.sign_pub)
    assert got == EpochKey(room="general", epoch=2, after_op=7, key=bytes(32))
