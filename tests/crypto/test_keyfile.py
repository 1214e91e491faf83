"""The passphrase-sealed identity key file.

Most tests use the Argon2id INTERACTIVE limits to stay fast; one uses the
defaults.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pytest
from nacl.pwhash import argon2id

from curvechat.crypto import Identity, KeyFileError, WrongPassphrase, load_identity, seal_identity
from curvechat.crypto.keyfile import FORMAT, MAX_MEMLIMIT, MAX_OPSLIMIT, VERSION

FAST = {"opslimit": argon2id.OPSLIMIT_INTERACTIVE, "memlimit": argon2id.MEMLIMIT_INTERACTIVE}
PASS = b"correct horse battery staple"


@pytest.fixture
def alice() -> Identity:
    return Identity.generate("alice")


@pytest.fixture
def sealed(tmp_path: Path, alice: Identity) -> Path:
    path = tmp_path / "identity.key"
    seal_identity(alice, PASS, path, **FAST)
    return path


def _fields(path: Path) -> dict[str, object]:
    data = msgspec.msgpack.decode(path.read_bytes())
    assert isinstance(data, dict)
    return data


def _rewrite(path: Path, **changes: object) -> None:
    fields = _fields(path)
    fields.update(changes)
    path.write_bytes(msgspec.msgpack.encode(fields))


def _same_identity(a: Identity, b: Identity) -> bool:
    return (a.user, a.sign_seed, a.transport_secret) == (b.user, b.sign_seed, b.transport_secret)


def test_round_trip(sealed: Path, alice: Identity) -> None:
    assert _same_identity(load_identity(sealed, PASS), alice)


def test_file_layout(sealed: Path) -> None:
    fields = _fields(sealed)
    assert set(fields) == {
        "format",
        "version",
        "kdf",
        "opslimit",
        "memlimit",
        "salt",
        "nonce",
        "ct",
    }
    assert fields["format"] == FORMAT == "curvechat-identity"
    assert fields["version"] == VERSION == 1
    assert fields["kdf"] == "argon2id"
    assert fields["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE
    assert fields["memlimit"] == argon2id.MEMLIMIT_INTERACTIVE


def test_no_secret_in_clear(sealed: Path, alice: Identity) -> None:
    data = sealed.read_bytes()
    assert alice.sign_seed not in data
    assert alice.transport_secret not in data


def test_mode_is_0600(sealed: Path) -> None:
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600


def test_mode_is_0600_even_with_permissive_umask(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "identity.key"
    old = os.umask(0)
    try:
        seal_identity(alice, PASS, path, **FAST)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_replaces_existing_file_and_leaves_no_temp_file(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    seal_identity(alice, PASS, path, **FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _same_identity(load_identity(path, PASS), alice)
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_failed_write_leaves_old_file_and_no_temp_file(tmp_path: Path, alice: Identity) -> None:
    # The target is a non-empty directory: os.replace fails after the
    # temporary file was written.
    path = tmp_path / "identity.key"
    path.mkdir()
    (path / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        seal_identity(alice, PASS, path, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]
    assert (path / "inside").read_bytes() == b"x"


def test_two_seals_differ(tmp_path: Path, alice: Identity) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    seal_identity(alice, PASS, a, **FAST)
    seal_identity(alice, PASS, b, **FAST)
    assert _fields(a)["salt"] != _fields(b)["salt"]
    assert _fields(a)["nonce"] != _fields(b)["nonce"]


def test_wrong_passphrase_leaves_file_unchanged(sealed: Path) -> None:
    before = sealed.read_bytes()
    mtime = sealed.stat().st_mtime_ns
    with pytest.raises(WrongPassphrase):
        load_identity(sealed, b"wrong")
    with pytest.raises(WrongPassphrase):
        load_identity(sealed, b"")
    assert sealed.read_bytes() == before
    assert sealed.stat().st_mtime_ns == mtime
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600


def test_wrong_passphrase_is_a_key_file_error() -> None:
    assert issubclass(WrongPassphrase, KeyFileError)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match="no identity key file") as info:
        load_identity(path, PASS)
    assert not isinstance(info.value, WrongPassphrase)


def test_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        load_identity(tmp_path, PASS)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00",
        b"not msgpack at all \xc1",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"format": "something-else", "version": 1}),
        msgspec.msgpack.encode({"format": FORMAT}),
        msgspec.msgpack.encode({"format": FORMAT, "version": 1}),
        b"\x00" * 10_000,
    ],
)
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        load_identity(path, PASS)
    assert not isinstance(info.value, WrongPassphrase)


def test_truncated_file(sealed: Path) -> None:
    data = sealed.read_bytes()
    for n in range(len(data)):
        sealed.write_bytes(data[:n])
        with pytest.raises(KeyFileError):
            load_identity(sealed, PASS)


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 2},
        {"kdf": "scrypt"},
        {"salt": b"short"},
        {"nonce": bytes(23)},
        {"ct": b"tiny"},
        {"opslimit": "3"},
        {"extra": 1},
    ],
)
def test_bad_header(sealed: Path, changes: dict[str, object]) -> None:
    _rewrite(sealed, **changes)
    with pytest.raises(KeyFileError) as info:
        load_identity(sealed, PASS)
    assert not isinstance(info.value, WrongPassphrase)


def test_altered_ciphertext_or_salt_does_not_open(sealed: Path) -> None:
    fields = _fields(sealed)
    ct = fields["ct"]
    salt = fields["salt"]
    assert isinstance(ct, bytes)
    assert isinstance(salt, bytes)
    _rewrite(sealed, ct=bytes([ct[0] ^ 1]) + ct[1:])
    with pytest.raises(KeyFileError):
        load_identity(sealed, PASS)
    _rewrite(sealed, ct=ct, salt=bytes([salt[0] ^ 1]) + salt[1:])
    with pytest.raises(KeyFileError):
        load_identity(sealed, PASS)


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [
        (argon2id.OPSLIMIT_INTERACTIVE - 1, argon2id.MEMLIMIT_INTERACTIVE),
        (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE // 2),
        (1, 8192),
        (MAX_OPSLIMIT + 1, argon2id.MEMLIMIT_INTERACTIVE),
        (argon2id.OPSLIMIT_INTERACTIVE, MAX_MEMLIMIT * 2),
    ],
)
def test_refuses_weak_or_absurd_limits(
    tmp_path: Path, alice: Identity, opslimit: int, memlimit: int
) -> None:
    path = tmp_path / "identity.key"
    with pytest.raises(ValueError, match="Argon2id"):
        seal_identity(alice, PASS, path, opslimit=opslimit, memlimit=memlimit)
    assert not path.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"opslimit": argon2id.OPSLIMIT_INTERACTIVE - 1},
        {"memlimit": argon2id.MEMLIMIT_INTERACTIVE // 2},
        {"memlimit": 2**40},
    ],
)
def test_load_refuses_weak_or_absurd_limits(sealed: Path, changes: dict[str, object]) -> None:
    _rewrite(sealed, **changes)
    with pytest.raises(KeyFileError, match="Argon2id") as info:
        load_identity(sealed, PASS)
    assert not isinstance(info.value, WrongPassphrase)


def test_default_limits_are_moderate(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "identity.key"
    seal_identity(alice, PASS, path)
    fields = _fields(path)
    opslimit, memlimit = fields["opslimit"], fields["memlimit"]
    assert isinstance(opslimit, int)
    assert isinstance(memlimit, int)
    assert opslimit >= argon2id.OPSLIMIT_MODERATE
    assert memlimit >= argon2id.MEMLIMIT_MODERATE
    assert _same_identity(load_identity(path, PASS), alice)


def test_passphrase_must_be_bytes(tmp_path: Path, alice: Identity, sealed: Path) -> None:
    with pytest.raises(TypeError):
        seal_identity(alice, "text", tmp_path / "x", **FAST)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        load_identity(sealed, "text")  # type: ignore[arg-type]
