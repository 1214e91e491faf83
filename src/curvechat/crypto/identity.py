"""A user's long-term keys, signatures, and the strings people compare out loud.

An `Identity` holds two independent secrets:

* an Ed25519 signing seed: the user's identity key. It signs messages,
  membership ops and the transport statement, and (converted to X25519) it
  opens the epoch keys other members box for this user;
* an X25519 transport secret: the CURVE key of the user's ZeroMQ connection.
  It is separate so that the transport can be re-keyed, and so that the
  server, which sees the transport key in every handshake, never holds a key
  that can open anything.

The transport key is bound to the identity by `transport_sig`, a signature
over `transport_statement(user, transport_pub)`.
"""

from __future__ import annotations

from typing import Final, NoReturn

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.signing

from curvechat.crypto.errors import BadSignature
from curvechat.protocol import limits
from curvechat.protocol.codec import encode

DOMAIN_TRANSPORT: Final = b"curvechat/transport/v1\x00"

KEY_SIZE: Final = 32
SEED_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64

# blake2b personalisation strings keep these digests from ever colliding with
# a hash computed for another purpose over the same key.
_PERSON_FINGERPRINT: Final = b"curvechat-fpr-v1"
_PERSON_SAFETY: Final = b"curvechat-sn-v1"

# Signal iterates its safety-number hash 5200 times: each guess in a search
# for a key whose number matches someone else's then costs thousands of hash
# calls instead of one, while computing a number once takes well under a
# second (tens of milliseconds).
_SAFETY_ITERATIONS: Final = 5200
_SAFETY_CHUNKS: Final = 6  # of 5 digits each, per party


def _check_key(name: str, value: bytes, size: int = KEY_SIZE) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes")
    if len(value) != size:
        raise ValueError(f"{name} must be exactly {size} bytes long")


def _blake2b(data: bytes, person: bytes) -> bytes:
    return nacl.hash.blake2b(data, digest_size=32, person=person, encoder=nacl.encoding.RawEncoder)


def transport_statement(user: str, transport_pub: bytes) -> bytes:
    """The bytes an identity signs to vouch for its CURVE transport key."""
    _check_key("transport_pub", transport_pub)
    # msgpack of a list is self-delimiting, so no (user, key) pair can encode
    # to the same bytes as another.
    return DOMAIN_TRANSPORT + encode([user, transport_pub])


class Identity:
    """A user name with its Ed25519 identity key and X25519 transport key.

    Immutable. `repr` shows the user and the key's fingerprint, never a secret.

    :param user: the user name (must satisfy the protocol's name rule)
    :param sign_seed: the 32-byte Ed25519 seed
    :param transport_secret: the 32-byte X25519 secret of the CURVE transport
    """

    __slots__ = ("_box_secret", "_sign_secret", "_signing_key", "_transport_key", "_user")

    _user: str
    _signing_key: nacl.signing.SigningKey
    _sign_secret: bytes  # libsodium's 64-byte form of the signing key, for `sign`
    _box_secret: nacl.public.PrivateKey
    _transport_key: nacl.public.PrivateKey

    def __init__(self, user: str, sign_seed: bytes, transport_secret: bytes) -> None:
        if not isinstance(user, str) or not limits.is_user_name(user):
            raise ValueError(f"not a valid user name: {user!r}")
        _check_key("sign_seed", sign_seed, SEED_SIZE)
        _check_key("transport_secret", transport_secret)
        signing_key = nacl.signing.SigningKey(sign_seed)
        # object.__setattr__ because __setattr__ is blocked to keep this immutable.
        object.__setattr__(self, "_user", user)
        object.__setattr__(self, "_signing_key", signing_key)
        object.__setattr__(
            self, "_sign_secret", nacl.bindings.crypto_sign_seed_keypair(sign_seed)[1]
        )
        object.__setattr__(self, "_box_secret", signing_key.to_curve25519_private_key())
        object.__setattr__(self, "_transport_key", nacl.public.PrivateKey(transport_secret))

    @classmethod
    def generate(cls, user: str) -> Identity:
        """A new identity with fresh random keys."""
        # CURVE keys are plain X25519 keys, so PyNaCl makes them; the transport
        # layer only needs their z85 form.
        return cls(
            user,
            bytes(nacl.signing.SigningKey.generate()),
            bytes(nacl.public.PrivateKey.generate()),
        )

    @classmethod
    def from_secrets(cls, user: str, sign_seed: bytes, transport_secret: bytes) -> Identity:
        return cls(user, sign_seed, transport_secret)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"Identity(user={self._user!r}, fingerprint={fingerprint(self.sign_pub)!r})"

    def __reduce__(self) -> NoReturn:
        # Pickling would write the secrets somewhere nobody chose to put them;
        # the key file is the one place they are stored.
        raise TypeError("Identity cannot be pickled; use curvechat.crypto.keyfile")

    @property
    def user(self) -> str:
        return self._user

    @property
    def sign_seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def sign_pub(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def box_pub(self) -> bytes:
        return bytes(self._box_secret.public_key)

    @property
    def box_secret(self) -> nacl.public.PrivateKey:
        return self._box_secret

    @property
    def transport_secret(self) -> bytes:
        return bytes(self._transport_key)

    @property
    def transport_pub(self) -> bytes:
        return bytes(self._transport_key.public_key)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of `data`."""
        # The binding, not SigningKey.sign: the same libsodium call without
        # building a SignedMessage (a tenth of a message's seal).
        return nacl.bindings.crypto_sign(data, self._sign_secret)[: nacl.bindings.crypto_sign_BYTES]

    def transport_sig(self) -> bytes:
        return self.sign(transport_statement(self._user, self.transport_pub))


def verify(sign_pub: bytes, data: bytes, sig: bytes) -> None:
    """Check an Ed25519 signature; raise `BadSignature` unless it is valid.

    A key or signature of the wrong length or type is also a `BadSignature`:
    these arrive from peers, and callers should not need a second except clause.
    """
    if not (isinstance(sign_pub, bytes) and len(sign_pub) == KEY_SIZE):
        raise BadSignature("public key is not 32 bytes")
    if not (isinstance(sig, bytes) and len(sig) == SIGNATURE_SIZE):
        raise BadSignature("signature is not 64 bytes")
    try:
        nacl.signing.VerifyKey(sign_pub).verify(data, sig)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BadSignature("signature does not verify") from exc


def box_pub_from_sign_pub(sign_pub: bytes) -> bytes:
    """The X25519 public key matching an Ed25519 identity key.

    Raises `BadSignature` if `sign_pub` is not a valid Ed25519 point (libsodium
    also rejects points of small order).
    """
    if not (isinstance(sign_pub, bytes) and len(sign_pub) == KEY_SIZE):
        raise BadSignature("public key is not 32 bytes")
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(sign_pub)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BadSignature("not a valid Ed25519 public key") from exc


def fingerprint(sign_pub: bytes) -> str:
    """A short, readable name for an identity key: 8 groups of 4 hex digits."""
    _check_key("sign_pub", sign_pub)
    digest = _blake2b(sign_pub, _PERSON_FINGERPRINT)[:16].hex()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def _safety_half(user: str, sign_pub: bytes) -> str:
    _check_key("sign_pub", sign_pub)
    digest = _blake2b(encode([user, sign_pub]), _PERSON_SAFETY)
    for _ in range(_SAFETY_ITERATIONS):
        digest = _blake2b(digest + sign_pub, _PERSON_SAFETY)
    # 5 bytes (40 bits) per 5-digit group: the bias of reducing mod 10^5 is
    # below 10^-7, and 6 groups use 30 of the 32 digest bytes.
    return "".join(
        f"{int.from_bytes(digest[5 * i : 5 * i + 5], 'big') % 100_000:05d}"
        for i in range(_SAFETY_CHUNKS)
    )


def safety_number(a_user: str, a_pub: bytes, b_user: str, b_pub: bytes) -> str:
    """The number two users compare to check they see each other's real keys.

    60 decimal digits in 12 groups of 5; each user contributes 30 of them, and
    the halves are sorted so both sides compute the same string.
    """
    halves = sorted((_safety_half(a_user, a_pub), _safety_half(b_user, b_pub)))
    digits = "".join(halves)
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))
