"""Known-answer vectors for the wire formats the security of curvechat rests on.

The constants were produced once from the fixed inputs here. Any change to an
encoding, domain string, padding, KDF or derivation fails these tests, and is
a protocol version change (`PROTOCOL_VERSION`; for the key file, its
`VERSION`): add vectors for the new version, keep these for the old one.

Where randomness is drawn (nonces, the key file's salt), a stored output is
opened, and the deterministic parts of a fresh output (exactly what is
encrypted and signed) are checked byte for byte.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import msgspec
import nacl.bindings
import nacl.public
import nacl.secret
import pytest
from nacl.pwhash import argon2id

from curvechat.crypto import CryptoError, EpochKey, Identity, Uncommitted, box_pub_from_sign_pub
from curvechat.crypto.envelope import Plaintext, associated_data, open_message, seal_message
from curvechat.crypto.identity import fingerprint, safety_number, transport_statement, verify
from curvechat.crypto.keyfile import VERSION as KEYFILE_VERSION
from curvechat.crypto.keyfile import load_identity, seal_identity
from curvechat.crypto.membership import op_hash, replay, sign_op
from curvechat.crypto.roomkeys import unwrap_key_packet, wrap_epoch_key
from curvechat.protocol import PROTOCOL_VERSION, ProtocolError, decode_envelope, encode
from curvechat.protocol.messages import KeyPacket, MemberOp, SignedOp

# --- fixed inputs -------------------------------------------------------------
ALICE_SEED, ALICE_TRANSPORT = bytes(range(32)), bytes(range(32, 64))
BOB_SEED, BOB_TRANSPORT = bytes(range(64, 96)), bytes(range(96, 128))
ALICE = Identity("alice", ALICE_SEED, ALICE_TRANSPORT)
BOB = Identity("bob", BOB_SEED, BOB_TRANSPORT)
EPOCH_KEY = bytes(range(128, 160))
TS = 1_700_000_000_000
TS_BYTES = b"\xcf\x00\x00\x01\x8b\xcf\xe5\x68\x00"  # msgpack uint64 of TS
PASS = b"correct horse battery staple"
PLAIN = Plaintext(text="hello, bob", ts=TS)

# --- identity (protocol v1): Ed25519 seed -> keys, transport statement ----------
# Changing any of these is a protocol version change.
ALICE_SIGN_PUB = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
ALICE_BOX_PUB = bytes.fromhex("4701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01")
ALICE_TRANSPORT_PUB = bytes.fromhex(
    "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254"
)
# DOMAIN_TRANSPORT + msgpack [user, transport_pub]
ALICE_STATEMENT = b"curvechat/transport/v1\x00\x92\xa5alice\xc4\x20" + ALICE_TRANSPORT_PUB
ALICE_TRANSPORT_SIG = bytes.fromhex(
    "8d60fae40c5018731390c32c2c11ea9bde79914083b90bbcb2c7000e9f64dc4b7e1452aeb6dfbdd76cdcf8b0"
    "73fc9eb8a3602bf30e31645a4d38a14ec9d6a105"
)
BOB_SIGN_PUB = bytes.fromhex("2543b92ff1095511476adc8369db6ddc933665a11978dda1404ee1066ca9559d")
BOB_BOX_PUB = bytes.fromhex("f14b5173130a1b80687f273d49e8f4740a793a949b83b105837f2a61e8fee14f")
KNOWN_KEYS = {"alice": ALICE_SIGN_PUB, "bob": BOB_SIGN_PUB}

# --- fingerprint and safety number (protocol v1): what users compare -----------
# Changing these is a protocol version change (and users' numbers all change).
ALICE_FINGERPRINT = "d0d3 ad14 88a7 3401 0ce0 6c98 8201 3c72"
BOB_FINGERPRINT = "2ca9 5d6d fbad 4df3 6f61 7dc4 90c7 485e"
SAFETY_NUMBER = "35111 01720 87218 78763 76923 08984 83231 71667 04314 74098 96551 30142"

# --- message envelope (protocol v1, the second message format) -------------------
# alice's "hello, bob" in room "general", epoch 3, txn "txn-0001", under
# EPOCH_KEY. AD is msgpack [room, epoch, sender, txn]; BODY is the msgpack
# Plaintext, padded (0x80, then zeros) to 256 bytes before encryption; ct is
# the key commitment (KEY_COMMIT: BLAKE2b-256 keyed with the epoch key, of
# DOMAIN_KEY_COMMIT + nonce) and then the AEAD ciphertext; the signature
# covers DOMAIN_MSG + AD + nonce + ct. ENVELOPE is the msgpack Envelope as
# sent, with a nonce drawn once. Changing any of these is a protocol version
# change.
AD = b"\x94\xa7general\x03\xa5alice\xa8txn-0001"
BODY = b"\x83\xa4text\xaahello, bob\xa2ts" + TS_BYTES + b"\xa4kind\xa4text"
PADDED_BODY = BODY + b"\x80" + bytes(256 - len(BODY) - 1)
DOMAIN_MSG = b"curvechat/msg/v1\x00"
DOMAIN_KEY_COMMIT = b"curvechat/key-commit/v1\x00"
ENVELOPE = bytes.fromhex(
    "87a4726f6f6da767656e6572616ca565706f636803a673656e646572a5616c696365a374786ea874786e2d30"
    "303031a56e6f6e6365c4186144881de999d31fa6b16796e8e86c3e451e52b826ddf374a26374c501308df74c"
    "622d604e9ec12bcf4532cb984b3dde47cac1a576029b095ba9b49eabb921d8e79ed74ea7cf208c9e502935ba"
    "295fa3a10a74bfb596c88e0d04e25ff37945381854b33c2636098b422c25c7fd5f7be832387378e6be6c8d57"
    "f5a375c36df9af7ee185dc6157a2296ab3069ed05034f25afdc2d0db206c0d91f3969c13ee156ef00c6c4305"
    "28a12033186fdc9dca51584980340cbab663789037ba2e6210210baabcc92fffbd01cc8c088d3eb4ac40e574"
    "a0991eb6e589e9d984b7d459cbb7717fc04b3ffbd3126640e8dc186d51b863f745fdb7e4442b0c1a18a46d97"
    "90d28a7704d2f9ccd519cc09fec3013fe8859654159b16801066802d33a06ee97ee9c7de27daea4863b813e1"
    "8df1cd0a4243eb62ee6601e4170464dc208dada1a9a739b4fc9c77cce42b53a622b83e8390a3736967c440ba"
    "c926c142e589bf697924c48a2788c43063df3d8db9ef076e57ebe43c0f8d0435690fd22ca431f625230c9249"
    "929fdd4effe1ab91e01a3220643d8efe44fc0f"
)
KEY_COMMIT = bytes.fromhex("8df74c622d604e9ec12bcf4532cb984b3dde47cac1a576029b095ba9b49eabb9")

# The first message format: the same message, ct without the key commitment.
# Its signature still verifies; it is refused (`Uncommitted`) for its format.
ENVELOPE_FIRST_FORMAT = bytes.fromhex(
    "87a4726f6f6da767656e6572616ca565706f636803a673656e646572a5616c696365a374786ea874786e2d30"
    "303031a56e6f6e6365c418eff24b6b8405ba5f4d4f3b49bc6402ab8cb23673a7b4b1f3a26374c50110235669"
    "0960844a26005eb134eceed65a11060114aabf7441a80e5ed579310ab927a29d13c80980e2541ff3b373648c"
    "2a4563b6c04ce1fb58c2d29e8db28da0a0e2437ea7346de431058d3d796467e5b52327ba1733015d32140f73"
    "6b94b491d25571a52404ef0005ace9501b65531a9da9f9b633bba4a384bbcbea603f56c430265ea4b7d51e81"
    "d2db8404a95fd16e56f064e5e448577bf103e419472f7c9b559abff1a96ee267c2a1b322bc5e2eec2c8dca98"
    "9002e675d97004d8c09ce2ac9d47e7ebb674f6db037a81898c3d804154a23a0289b69c270a55e82aec37c272"
    "c6de19805e7e6be0230f55d7ae0eaf39063989eea471e3d2c7af4c9514636742d84070dcd2bab406078f92ae"
    "1e25dc7549a3736967c440fb774213db7575b04f2822e8fa3b50f37c0efb49033bbb8cb0518c177920ae4a8c"
    "f7784e22551189af57f75017bf38c372a0ad6f92d2698afc2ecd256ffe3f05"
)

# --- key packet (protocol v1) ---------------------------------------------------
# alice boxes EPOCH_KEY (room "general", epoch 3, after_op 1) for bob. BOXED is
# msgpack [room, epoch, after_op, key, recipient], the plaintext of a
# crypto_box between their identity keys converted to X25519; KEY_PACKET is the
# msgpack KeyPacket as sent, with a box nonce drawn once. Changing either is a
# protocol version change.
BOXED = b"\x95\xa7general\x03\x01\xc4\x20" + EPOCH_KEY + b"\xa3bob"
KEY_PACKET = bytes.fromhex(
    "85a4726f6f6da767656e6572616ca565706f636803a9726563697069656e74a3626f62a673656e646572a561"
    "6c696365a3626f78c459db5a4dc7d5ffdd0c1f438fceb7ee120ab1bf4d3fbf47c734f1bbd932ff6c6f337a6a"
    "8d292368d616cd71db8ba1f4435597469e7c213a01b374980b9d4be3d8e6016b9623e070ff2dd28edf1a304e"
    "d1a1288d476f96e60afc98"
)

# --- membership ops (protocol v1) -------------------------------------------------
# The log of room "general": alice creates it, then adds bob. OP_* is the
# msgpack MemberOp (an array: room, index, prev, kind, actor, target,
# target_key, ts); SIG_* alice's Ed25519 signature of DOMAIN_OP + op; HASH_*
# the op_hash (blake2b-256 of op + sig) that the next op's prev carries.
# Changing any of these is a protocol version change.
DOMAIN_OP = b"curvechat/op/v1\x00"
OP_CREATE = b"".join(
    [
        b"\x98\xa7general\x00",  # array of 8: room, index
        b"\xc4\x20" + bytes(32),  # prev: none yet
        b"\xa6create\xa5alice\xa5alice",  # kind, actor, target
        b"\xc4\x20" + ALICE_SIGN_PUB,  # target_key
        TS_BYTES,
    ]
)
SIG_CREATE = bytes.fromhex(
    "f610944d2ef674de70959275a99ddd918aa74d15715874909a4d86df14a0a50ce54f214c852812064e4d91ce"
    "4cd51620e384e632485fa2a31e6a7668d8f58103"
)
HASH_CREATE = bytes.fromhex("26d12ec085aa934ac3d1dbcb4ba7aa8f9a4ba0eb6aafc73427c11f537b446153")
OP_ADD = bytes.fromhex(
    "98a767656e6572616c01c42026d12ec085aa934ac3d1dbcb4ba7aa8f9a4ba0eb6aafc73427c11f537b446153"
    "a3616464a5616c696365a3626f62c4202543b92ff1095511476adc8369db6ddc933665a11978dda1404ee106"
    "6ca9559dcf0000018bcfe56be8"
)
SIG_ADD = bytes.fromhex(
    "9675b37f9ba70c603f050b3fc7a5bc909620bbdc6303fbd0f22d57b981c1afeb106ffddf966661ed212459dc"
    "99030d1c10a81716323c531622d5edec2ca48d00"
)
HASH_ADD = bytes.fromhex("67a5c77ec6580e6a5dd3c8e298c6eddf5be87e2dc85bf39c6d8d92b3e5c32415")

# --- identity key file (key file format version 1) ------------------------------
# alice's identity sealed under PASS with the Argon2id INTERACTIVE limits
# (opslimit 2, memlimit 64 MiB), salt and nonce drawn once. SECRETS is the
# msgpack map it encrypts with XSalsa20-Poly1305. Changing either is a key file
# VERSION change: old files must keep opening.
SECRETS = b"".join(
    [
        b"\x83\xa4user\xa5alice",
        b"\xa9sign_seed\xc4\x20" + ALICE_SEED,
        b"\xb0transport_secret\xc4\x20" + ALICE_TRANSPORT,
    ]
)
KEYFILE = bytes.fromhex(
    "88a6666f726d6174b26375727665636861742d6964656e74697479a776657273696f6e01a36b6466a8617267"
    "6f6e326964a86f70736c696d697402a86d656d6c696d6974ce04000000a473616c74c410cbb3121e0f5bb3b0"
    "afe9601b7ca2e36ea56e6f6e6365c4186155bfd06c18fb7bdacea531c5bae9ff35ee575d9739a072a26374c4"
    "7b4b8067245c48481003a25bb09edfad469b929654489bf06a966ca7638d4e36692b91eda38b646455a112b6"
    "cef3561845e1c8b422d718e662ebfa5b25731c12e68f00b213dcf41b8d87b78fd2231834ba3b823604fd4905"
    "dcf3192ce59e9ac5ee47e0866d563b5a935010f139cc53f03dce5f1bb333d4ff33cf6ddf"
)


def test_vectors_are_of_protocol_version_1() -> None:
    assert (PROTOCOL_VERSION, KEYFILE_VERSION) == (1, 1)  # a new one needs new vectors


def test_identity_derivation() -> None:
    assert (ALICE.sign_pub, ALICE.box_pub) == (ALICE_SIGN_PUB, ALICE_BOX_PUB)
    assert (BOB.sign_pub, BOB.box_pub) == (BOB_SIGN_PUB, BOB_BOX_PUB)
    assert box_pub_from_sign_pub(ALICE_SIGN_PUB) == ALICE_BOX_PUB
    assert ALICE.transport_pub == ALICE_TRANSPORT_PUB
    assert transport_statement("alice", ALICE_TRANSPORT_PUB) == ALICE_STATEMENT
    assert ALICE.transport_sig() == ALICE_TRANSPORT_SIG
    verify(ALICE_SIGN_PUB, ALICE_STATEMENT, ALICE_TRANSPORT_SIG)


def test_fingerprint_and_safety_number() -> None:
    assert fingerprint(ALICE_SIGN_PUB) == ALICE_FINGERPRINT
    assert fingerprint(BOB_SIGN_PUB) == BOB_FINGERPRINT
    assert safety_number("alice", ALICE_SIGN_PUB, "bob", BOB_SIGN_PUB) == SAFETY_NUMBER
    assert safety_number("bob", BOB_SIGN_PUB, "alice", ALICE_SIGN_PUB) == SAFETY_NUMBER


def test_envelope_vector_opens() -> None:
    env = decode_envelope(ENVELOPE)
    assert encode(env) == ENVELOPE
    assert len(env.ct) == 32 + 256 + 16
    assert env.ct[:32] == KEY_COMMIT
    assert open_message(env, key=EPOCH_KEY, sender_sign_pub=ALICE_SIGN_PUB) == PLAIN


def test_the_first_format_verifies_and_is_refused_for_its_format() -> None:
    env = decode_envelope(ENVELOPE_FIRST_FORMAT)
    assert len(env.ct) == 256 + 16
    verify(ALICE_SIGN_PUB, DOMAIN_MSG + AD + env.nonce + env.ct, env.sig)
    aead_open = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    assert aead_open(env.ct, AD, env.nonce, EPOCH_KEY) == PADDED_BODY
    with pytest.raises(Uncommitted):
        open_message(env, key=EPOCH_KEY, sender_sign_pub=ALICE_SIGN_PUB)


def test_envelope_sealing_is_byte_exact_but_for_the_nonce() -> None:
    assert associated_data("general", 3, "alice", "txn-0001") == AD
    assert encode(PLAIN) == BODY
    env = seal_message(
        ALICE, room="general", epoch=3, key=EPOCH_KEY, txn="txn-0001", plaintext=PLAIN
    )
    assert (env.room, env.epoch, env.sender, env.txn) == ("general", 3, "alice", "txn-0001")
    aead_open = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    commit = hashlib.blake2b(DOMAIN_KEY_COMMIT + env.nonce, key=EPOCH_KEY, digest_size=32)
    assert env.ct[:32] == commit.digest()
    assert aead_open(env.ct[32:], AD, env.nonce, EPOCH_KEY) == PADDED_BODY
    assert env.sig == ALICE.sign(DOMAIN_MSG + AD + env.nonce + env.ct)


def test_key_packet_vector_opens() -> None:
    packet = msgspec.msgpack.decode(KEY_PACKET, type=KeyPacket)
    assert encode(packet) == KEY_PACKET
    key = unwrap_key_packet(BOB, packet, ALICE_SIGN_PUB)
    assert key == EpochKey(room="general", epoch=3, after_op=1, key=EPOCH_KEY)


def test_key_packet_wrapping_is_byte_exact_but_for_the_nonce() -> None:
    epoch_key = EpochKey(room="general", epoch=3, after_op=1, key=EPOCH_KEY)
    pkt = wrap_epoch_key(ALICE, epoch_key, "bob", BOB_SIGN_PUB)
    assert (pkt.room, pkt.epoch, pkt.recipient, pkt.sender) == ("general", 3, "bob", "alice")
    box = nacl.public.Box(BOB.box_secret, nacl.public.PublicKey(ALICE_BOX_PUB))
    assert box.decrypt(pkt.box) == BOXED
    assert len(pkt.box) == 24 + 16 + len(BOXED)


def test_membership_ops() -> None:
    # MemberOp(room, index, prev, kind, actor, target, target_key, ts)
    create = MemberOp("general", 0, bytes(32), "create", "alice", "alice", ALICE_SIGN_PUB, TS)
    add = MemberOp("general", 1, HASH_CREATE, "add", "alice", "bob", BOB_SIGN_PUB, TS + 1000)
    signed = [sign_op(ALICE, create), sign_op(ALICE, add)]
    assert signed == [SignedOp(op=OP_CREATE, sig=SIG_CREATE), SignedOp(op=OP_ADD, sig=SIG_ADD)]
    verify(ALICE_SIGN_PUB, DOMAIN_OP + OP_CREATE, SIG_CREATE)
    assert encode(signed[0]) == b"\x82\xa2op\xc4\x6a" + OP_CREATE + b"\xa3sig\xc4\x40" + SIG_CREATE
    assert [op_hash(s) for s in signed] == [HASH_CREATE, HASH_ADD]
    state = replay("general", signed)
    assert (state.index, state.head) == (1, HASH_ADD)
    assert (state.key_of("alice"), state.key_of("bob")) == (ALICE_SIGN_PUB, BOB_SIGN_PUB)


def _open_keyfile(data: bytes) -> Identity:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "identity.key").write_bytes(data)
        return load_identity(Path(tmp) / "identity.key", PASS)


def test_keyfile_vector_opens() -> None:
    identity = _open_keyfile(KEYFILE)
    assert identity.user == "alice"
    assert (identity.sign_seed, identity.transport_secret) == (ALICE_SEED, ALICE_TRANSPORT)


def test_keyfile_sealing_is_byte_exact_but_for_salt_and_nonce(tmp_path: Path) -> None:
    seal_identity(ALICE, PASS, tmp_path / "k", opslimit=2, memlimit=2**26)
    kf = msgspec.msgpack.decode((tmp_path / "k").read_bytes())
    assert list(kf) == ["format", "version", "kdf", "opslimit", "memlimit", "salt", "nonce", "ct"]
    assert list(kf.values())[:5] == ["curvechat-identity", 1, "argon2id", 2, 2**26]
    key = argon2id.kdf(32, PASS, kf["salt"], 2, 2**26)
    assert nacl.secret.SecretBox(key).decrypt(kf["ct"], kf["nonce"]) == SECRETS


# --- every vector refuses a flipped byte ------------------------------------------
def _open_envelope(data: bytes) -> object:
    return open_message(decode_envelope(data), key=EPOCH_KEY, sender_sign_pub=ALICE_SIGN_PUB)


def _open_key_packet(data: bytes) -> object:
    packet = msgspec.msgpack.decode(data, type=KeyPacket)
    # As the client does, look the sender's key up by the name on the packet
    # (KeyError: no such user, so nothing to open it with).
    return unwrap_key_packet(BOB, packet, KNOWN_KEYS[packet.sender])


def _replay_after(*before: SignedOp) -> Callable[[bytes], object]:
    return lambda data: replay("general", [*before, SignedOp(op=data[:-64], sig=data[-64:])])


VECTORS: dict[str, tuple[bytes, Callable[[bytes], object]]] = {
    "envelope": (ENVELOPE, _open_envelope),
    "key_packet": (KEY_PACKET, _open_key_packet),
    "transport_sig": (ALICE_TRANSPORT_SIG, partial(verify, ALICE_SIGN_PUB, ALICE_STATEMENT)),
    "op_create": (OP_CREATE + SIG_CREATE, _replay_after()),
    "op_add": (OP_ADD + SIG_ADD, _replay_after(SignedOp(op=OP_CREATE, sig=SIG_CREATE))),
    "keyfile": (KEYFILE, _open_keyfile),
}
# Every byte is flipped but in the key file, where each flip costs an Argon2id
# run: there, one byte of each field's value. Not the low bytes of memlimit:
# Argon2id counts memory in KiB, so 64 MiB + 1 derives the same key and the
# file still opens (harmless: nothing else changes).
_KF = msgspec.msgpack.decode(KEYFILE)
KEYFILE_FLIPS = [
    *(KEYFILE.index(v) for v in (b"identity", b"argon2id", _KF["salt"], _KF["nonce"], _KF["ct"])),
    *(KEYFILE.index(k) + len(k) for k in (b"version", b"opslimit", b"memlimit\xce")),
    len(KEYFILE) - 1,
]
REFUSED = (CryptoError, ProtocolError, msgspec.DecodeError, KeyError)


@pytest.mark.parametrize("name", VECTORS)
def test_a_flipped_byte_is_refused(name: str) -> None:
    data, open_ = VECTORS[name]
    open_(data)  # the vector itself opens, so the refusals below are the flips'
    for i in KEYFILE_FLIPS if name == "keyfile" else range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(REFUSED):
            open_(bytes(flipped))
