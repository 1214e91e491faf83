"""The identity key file: a user's secrets at rest, sealed with a passphrase.

The only module of this package that does I/O, and only on its own file.

The file is one msgpack map::

    {format: "curvechat-identity", version: 1, kdf: "argon2id",
     opslimit, memlimit, salt, nonce, ct}

where ``ct`` is XSalsa20-Poly1305 (`nacl.secret.SecretBox`), under a key
derived from the passphrase with Argon2id, of the msgpack map
``{user, sign_seed, transport_secret}``. The header is not encrypted, but it
is bound all the same: changing the salt or the limits changes the derived
key, and the file then no longer opens.

A file is written to a temporary file in the same directory, created 0600 and
fsynced, then renamed over the old one: it is never readable by other users
and never found half-written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Final

import msgspec
import nacl.exceptions
import nacl.secret
import nacl.utils
from nacl.pwhash import argon2id

from curvechat.crypto.errors import KeyFileError, WrongPassphrase
from curvechat.crypto.identity import Identity
from curvechat.protocol.codec import encode
from curvechat.protocol.errors import UNDECODABLE
from curvechat.smallfiles import FileTooLarge, read_small_file

FORMAT: Final = "curvechat-identity"
VERSION: Final = 1
KDF: Final = "argon2id"

MIN_OPSLIMIT: Final = argon2id.OPSLIMIT_INTERACTIVE
MIN_MEMLIMIT: Final = argon2id.MEMLIMIT_INTERACTIVE
# Upper bounds, so that a crafted file cannot make loading it allocate more
# than 1 GiB or run for many minutes; everything seal_identity writes is
# within them.
MAX_OPSLIMIT: Final = 32
MAX_MEMLIMIT: Final = argon2id.MEMLIMIT_SENSITIVE

_MAX_FILE_BYTES: Final = 4096


class _Header(msgspec.Struct, frozen=True):
    """What must be read first to say which format and version a file is."""

    format: str = ""
    version: int = -1


class _KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    version: int
    kdf: str
    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    ct: bytes


class _Secrets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: str
    sign_seed: bytes
    transport_secret: bytes

    def __repr__(self) -> str:
        return f"_Secrets(user={self.user!r})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("user", self.user)]


_header_decoder = msgspec.msgpack.Decoder(_Header)
_file_decoder = msgspec.msgpack.Decoder(_KeyFile)
_secrets_decoder = msgspec.msgpack.Decoder(_Secrets)


def _limits_problem(opslimit: object, memlimit: object) -> str | None:
    if not isinstance(opslimit, int) or isinstance(opslimit, bool):
        return "opslimit must be an int"
    if not isinstance(memlimit, int) or isinstance(memlimit, bool):
        return "memlimit must be an int"
    if opslimit < MIN_OPSLIMIT or memlimit < MIN_MEMLIMIT:
        return (
            f"Argon2id limits ops={opslimit}, mem={memlimit} are weaker than the "
            f"minimum ops={MIN_OPSLIMIT}, mem={MIN_MEMLIMIT}"
        )
    if opslimit > MAX_OPSLIMIT or memlimit > MAX_MEMLIMIT:
        return (
            f"Argon2id limits ops={opslimit}, mem={memlimit} exceed the "
            f"maximum ops={MAX_OPSLIMIT}, mem={MAX_MEMLIMIT}"
        )
    return None


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit, memlimit)


def seal_identity(
    identity: Identity,
    passphrase: bytes,
    path: Path,
    *,
    opslimit: int = argon2id.OPSLIMIT_MODERATE,
    memlimit: int = argon2id.MEMLIMIT_MODERATE,
) -> None:
    """Write `identity` to `path`, encrypted under `passphrase`, replacing any
    file already there.

    Raises `ValueError` for Argon2id limits below the INTERACTIVE preset (or
    above `MAX_OPSLIMIT` / `MAX_MEMLIMIT`); `OSError` if the file cannot be
    written, in which case the old file, if any, is left as it was.
    """
    data = sealed_identity(identity, passphrase, opslimit=opslimit, memlimit=memlimit)
    _write_private(Path(path), data)


def sealed_identity(
    identity: Identity,
    passphrase: bytes,
    *,
    opslimit: int = argon2id.OPSLIMIT_MODERATE,
    memlimit: int = argon2id.MEMLIMIT_MODERATE,
) -> bytes:
    """The bytes `seal_identity` writes, without writing them (for a caller
    that places the file itself, e.g. `init`, which keeps it only once the
    server took the name). Raises `ValueError` as `seal_identity` does."""
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be bytes")
    problem = _limits_problem(opslimit, memlimit)
    if problem is not None:
        raise ValueError(problem)
    body = encode(
        _Secrets(
            user=identity.user,
            sign_seed=identity.sign_seed,
            transport_secret=identity.transport_secret,
        )
    )
    salt = nacl.utils.random(argon2id.SALTBYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    data = encode(
        _KeyFile(
            format=FORMAT,
            version=VERSION,
            kdf=KDF,
            opslimit=opslimit,
            memlimit=memlimit,
            salt=salt,
            nonce=nonce,
            ct=box.encrypt(body, nonce).ciphertext,
        )
    )
    return data


def create_private(path: Path, data: bytes) -> None:
    """`data` in a NEW file at `path`, mode 0600 from the start, synced to
    disk. Never writes through a file or symlink already there (O_EXCL,
    O_NOFOLLOW); a write that fails removes what it created."""
    flags = (
        os.O_CREAT
        | os.O_EXCL
        | os.O_WRONLY
        | getattr(os, "O_BINARY", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NOFOLLOW", 0)
    )
    fd = os.open(path, flags, 0o600)
    try:
        try:
            # The umask can only remove bits from 0o600; fchmod makes the mode
            # exactly 0o600 even under an unusual umask.
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _write_private(path: Path, data: bytes) -> None:
    directory = path.parent
    tmp = directory / f".{path.name}.{nacl.utils.random(8).hex()}.tmp"
    create_private(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


class Staging:
    """Directories and staged files made for a new identity, to remove on
    failure (only those): `init` and the terminal client's first run."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.files: list[Path] = []

    def mkdir(self, path: Path) -> None:
        missing: list[Path] = []
        for p in [path, *path.parents]:
            if p.exists():
                break
            missing.append(p)
        # outermost first, and before making them: a mkdir that fails half way
        # (a name too long for the file system) leaves none of them behind
        self.dirs += reversed(missing)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def stage(self, target: Path, data: bytes) -> Path:
        """`data` in a new hidden file beside `target`, 0600 from the start."""
        tmp = target.with_name(f".{target.name}.{nacl.utils.random(8).hex()}.new")
        create_private(tmp, data)
        self.files.append(tmp)
        return tmp

    def undo(self) -> None:
        for f in self.files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        for d in reversed(self.dirs):  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                d.rmdir()

    def keep(self, path: Path) -> None:
        """`path` is no longer removed by `undo` (it holds what must stay)."""
        self.files = [f for f in self.files if f != path]


def link_new(tmp: Path, target: Path) -> None:
    """`tmp` becomes `target`, never replacing a file already there
    (FileExistsError), synced; `tmp` is gone after."""
    os.link(tmp, target)
    os.unlink(tmp)
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Not possible everywhere (Windows), and
    # the file is complete either way, so failure here is not an error.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _parse(data: bytes, path: Path) -> _KeyFile:
    try:
        header = _header_decoder.decode(data)
    except UNDECODABLE as exc:
        raise KeyFileError(f"{path} is not a curvechat identity file") from exc
    if header.format != FORMAT:
        raise KeyFileError(f"{path} is not a curvechat identity file")
    if header.version != VERSION:
        raise KeyFileError(
            f"{path} is an identity file of version {header.version}; "
            f"this program reads version {VERSION}"
        )
    try:
        file = _file_decoder.decode(data)
    except UNDECODABLE as exc:
        raise KeyFileError(f"identity file {path} is corrupt: {exc}") from exc
    if file.kdf != KDF:
        raise KeyFileError(f"identity file {path} uses unsupported KDF {file.kdf!r}")
    problem = _limits_problem(file.opslimit, file.memlimit)
    if problem is not None:
        raise KeyFileError(f"identity file {path} refused: {problem}")
    if len(file.salt) != argon2id.SALTBYTES or len(file.nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError(f"identity file {path} is corrupt: bad salt or nonce length")
    if len(file.ct) < nacl.secret.SecretBox.MACBYTES:
        raise KeyFileError(f"identity file {path} is corrupt: ciphertext too short")
    return file


def load_identity(path: Path, passphrase: bytes) -> Identity:
    """Read and decrypt the identity stored at `path`.

    Raises `WrongPassphrase` if the passphrase does not open the file, and
    `KeyFileError` if the file is missing, unreadable, corrupt, of another
    format or version, or asks for Argon2id limits outside the accepted range.
    Never writes to the file.
    """
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be bytes")
    path = Path(path)
    try:
        data = read_small_file(path, _MAX_FILE_BYTES)
    except FileNotFoundError as exc:
        raise KeyFileError(f"no identity key file at {path}") from exc
    except FileTooLarge as exc:
        raise KeyFileError(f"{path} is too large to be a curvechat identity file") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read identity key file {path}: {exc.strerror or exc}") from exc
    file = _parse(data, path)
    try:
        key = _derive(passphrase, file.salt, file.opslimit, file.memlimit)
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError(f"cannot derive the key of identity file {path}: {exc}") from exc
    try:
        body = nacl.secret.SecretBox(key).decrypt(file.ct, file.nonce)
    except nacl.exceptions.CryptoError as exc:
        raise WrongPassphrase(
            f"wrong passphrase for identity file {path} (or the file was altered)"
        ) from exc
    try:
        secrets = _secrets_decoder.decode(body)
        return Identity.from_secrets(secrets.user, secrets.sign_seed, secrets.transport_secret)
    except (*UNDECODABLE, ValueError, TypeError) as exc:
        # Reaching here means the passphrase was right but the sealed contents
        # are not an identity: a bug in whatever wrote the file, not tampering.
        raise KeyFileError(f"identity file {path} holds invalid key material") from exc
