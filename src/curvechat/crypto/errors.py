"""The crypto package's exception tree.

::

    CryptoError              anything this package refuses (a CurvechatError)
    ├── BadSignature         a signature (or the key meant to check it) is invalid
    ├── DecryptError         authenticated decryption failed, or bound fields differ
    │   ├── KeyMismatch      a message was sealed under another key than the one held
    │   └── Uncommitted      a message of the first format, without a key commitment
    ├── KeyFileError         the identity key file is unreadable, corrupt or unsupported
    │   └── WrongPassphrase  the key file is intact but the passphrase does not open it
    └── MembershipError      a membership op breaks a rule; carries a protocol ErrorCode

Messages never include key material: they are shown to users and written to
logs.
"""

from __future__ import annotations

from curvechat.protocol.errors import CurvechatError, ErrorCode


class CryptoError(CurvechatError):
    """Base of every error raised by `curvechat.crypto`."""

    code = "crypto"


class BadSignature(CryptoError):
    """A signature does not verify, or the public key is not a valid Ed25519 key."""

    code = "bad_signature"


class DecryptError(CryptoError):
    """Ciphertext failed authentication, or its authenticated contents contradict
    the fields it travelled with."""

    code = "decrypt_failed"


class KeyMismatch(DecryptError):
    """A message's signed key commitment names another key than the one held
    for its epoch: the sender and whoever gave us the key hold different
    keys for the same epoch, and one of them is not honest."""

    code = "key_mismatch"


class Uncommitted(DecryptError):
    """A message of the first format, whose ciphertext does not commit to its
    key: refused, as a member could craft one that opens as different texts
    under keys she gave to different members."""

    code = "uncommitted"


class KeyFileError(CryptoError):
    """The identity key file is missing, unreadable, corrupt or of an unsupported
    format."""

    code = "bad_identity"


class WrongPassphrase(KeyFileError):
    """The key file did not decrypt with the given passphrase.

    A file altered after it was written fails the same way: XSalsa20-Poly1305
    cannot tell a wrong key from a changed ciphertext.
    """

    code = "wrong_passphrase"


class MembershipError(CryptoError):
    """A membership op was refused; `code` is what a server replies with."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
