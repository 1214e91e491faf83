"""End-to-end cryptography: identities, message envelopes, epoch keys, and
the membership rules that decide who may hold them.

Everything a server must not be able to read or forge is made and checked
here, so the server and the client share one implementation of it.

This package must never open a socket, start or depend on an event loop, or
use any cryptography but PyNaCl (libsodium). It is sans-IO: bytes and typed
messages in, bytes and typed messages out. The one exception is `keyfile`,
which reads and writes the identity key file it is given, and nothing else.
No secret ever appears in a repr, an exception message or a log line.
"""

from curvechat.crypto.envelope import Plaintext, associated_data, open_message, seal_message
from curvechat.crypto.errors import (
    BadSignature,
    CryptoError,
    DecryptError,
    KeyFileError,
    KeyMismatch,
    MembershipError,
    Uncommitted,
    WrongPassphrase,
)
from curvechat.crypto.identity import (
    DOMAIN_TRANSPORT,
    Identity,
    box_pub_from_sign_pub,
    fingerprint,
    safety_number,
    transport_statement,
    verify,
)
from curvechat.crypto.keyfile import load_identity, seal_identity
from curvechat.crypto.membership import (
    DOMAIN_OP,
    GENESIS_PREV,
    RULES,
    Member,
    MemberState,
    op_hash,
    replay,
    sign_op,
)
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, unwrap_key_packet, wrap_epoch_key

__all__ = [
    "DOMAIN_OP",
    "DOMAIN_TRANSPORT",
    "GENESIS_PREV",
    "RULES",
    "BadSignature",
    "CryptoError",
    "DecryptError",
    "EpochKey",
    "Identity",
    "KeyFileError",
    "KeyMismatch",
    "Member",
    "MemberState",
    "MembershipError",
    "Plaintext",
    "Uncommitted",
    "WrongPassphrase",
    "associated_data",
    "box_pub_from_sign_pub",
    "fingerprint",
    "load_identity",
    "new_epoch_key",
    "op_hash",
    "open_message",
    "replay",
    "safety_number",
    "seal_identity",
    "seal_message",
    "sign_op",
    "transport_statement",
    "unwrap_key_packet",
    "verify",
    "wrap_epoch_key",
]
