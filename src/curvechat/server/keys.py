"""The server's CURVE keypair on disk: `server.key` (secret, mode 0600 from
the first byte) and `server.pub`, both z85."""

from __future__ import annotations

import os
from pathlib import Path

import zmq

from curvechat.protocol.errors import ConfigError

SECRET_FILE = "server.key"
PUBLIC_FILE = "server.pub"


class ServerKeyError(ConfigError):
    pass


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # A leftover from a start that died between writing and renaming: it was
    # never the key (the rename had not happened), so it can go.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_keypair(data_dir: Path) -> tuple[bytes, bytes]:
    """Return (public, secret) z85 keys, creating them on first start."""
    secret_path, public_path = data_dir / SECRET_FILE, data_dir / PUBLIC_FILE
    if secret_path.exists():
        secret = secret_path.read_bytes().strip()
        if len(secret) != 40:
            raise ServerKeyError(f"{secret_path} is not a z85 CURVE secret key")
        mode = secret_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ServerKeyError(
                f"{secret_path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        try:
            public = zmq.curve_public(secret)
        except zmq.ZMQError as exc:
            raise ServerKeyError(f"{secret_path}: {exc}") from exc
    else:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        public, secret = zmq.curve_keypair()
        _write_private(secret_path, secret + b"\n")
    public_path.write_bytes(public + b"\n")
    return public, secret
