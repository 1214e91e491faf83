"""One AEAD ciphertext that authenticates under two XChaCha20-Poly1305 keys,
as a member who boxes a different epoch key to each member could make.

ChaCha20 and Poly1305 are written out here (RFC 8439, and libsodium's
XChaCha20-Poly1305: HChaCha20 on the nonce's first 16 bytes, the last 8
after four zero bytes) to reach the one-time Poly1305 keys, which libsodium
does not hand out; `tests/crypto/test_key_commitment.py` checks them against
libsodium. The free block is solved for: Poly1305 is linear in each block,
mod 2^130 - 5.
"""

from __future__ import annotations

import secrets
import struct

P = 2**130 - 5
MASK32 = 0xFFFFFFFF


def _rotl(v: int, n: int) -> int:
    return ((v << n) & MASK32) | (v >> (32 - n))


def _rounds(state: list[int]) -> list[int]:
    x = list(state)
    for _ in range(10):
        for a, b, c, d in (
            (0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
            (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14),
        ):  # fmt: skip
            x[a] = (x[a] + x[b]) & MASK32
            x[d] = _rotl(x[d] ^ x[a], 16)
            x[c] = (x[c] + x[d]) & MASK32
            x[b] = _rotl(x[b] ^ x[c], 12)
            x[a] = (x[a] + x[b]) & MASK32
            x[d] = _rotl(x[d] ^ x[a], 8)
            x[c] = (x[c] + x[d]) & MASK32
            x[b] = _rotl(x[b] ^ x[c], 7)
    return x


_SIGMA = list(struct.unpack("<4I", b"expand 32-byte k"))


def poly_key(key: bytes, nonce: bytes) -> tuple[int, int]:
    """The one-time Poly1305 key (r clamped, s) of XChaCha20-Poly1305."""
    state = _SIGMA + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce[:16]))
    x = _rounds(state)
    subkey = struct.pack("<8I", *(x[0:4] + x[12:16]))  # HChaCha20
    state = _SIGMA + list(struct.unpack("<8I", subkey)) + [0, 0]
    state += list(struct.unpack("<2I", nonce[16:24]))
    x = _rounds(state)
    block = struct.pack("<16I", *((a + b) & MASK32 for a, b in zip(x, state, strict=True)))
    r = int.from_bytes(block[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    return r, int.from_bytes(block[16:32], "little")


def _blocks(ad: bytes, ct: bytes) -> list[int]:
    """Poly1305's input as numbers: the associated data padded with zeros to
    16 bytes, the ciphertext (a multiple of 16 bytes here), both lengths."""
    data = ad + bytes(-len(ad) % 16) + ct + struct.pack("<QQ", len(ad), len(ct))
    return [int.from_bytes(data[i : i + 16], "little") + 2**128 for i in range(0, len(data), 16)]


def _poly(r: int, blocks: list[int]) -> int:
    h = 0
    for m in blocks:
        h = (h + m) * r % P
    return h


def tag(r: int, s: int, ad: bytes, ct: bytes) -> bytes:
    return ((_poly(r, _blocks(ad, ct)) + s) % 2**128).to_bytes(16, "little")


def two_key_ciphertext(key1: bytes, key2: bytes, nonce: bytes, ad: bytes) -> bytes:
    """A ciphertext and tag that authenticate under both keys."""
    (r1, s1), (r2, s2) = poly_key(key1, nonce), poly_key(key2, nonce)
    free = 1  # the second block of the ciphertext is solved for
    while True:
        ct = bytearray(secrets.token_bytes(256))
        blocks = _blocks(ad, bytes(ct))
        at = (len(ad) + 15) // 16 + free
        power = len(blocks) - at
        blocks[at] = 0
        rest1, rest2 = _poly(r1, blocks), _poly(r2, blocks)
        m = (s2 - s1 - rest1 + rest2) * pow(pow(r1, power, P) - pow(r2, power, P), -1, P) % P
        if not 2**128 <= m < 2**129:
            continue
        ct[16 * free : 16 * free + 16] = (m - 2**128).to_bytes(16, "little")
        tag1, tag2 = tag(r1, s1, ad, bytes(ct)), tag(r2, s2, ad, bytes(ct))
        if tag1 == tag2:
            return bytes(ct) + tag1
