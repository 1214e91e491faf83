"""One node per data directory.

`curvechat serve` takes an exclusive lock (flock) on ``DATA/node.lock``
before it touches anything else in its data directory, and holds it until
it exits. The kernel drops the lock with the process, however it ends
(kill -9 included), so a lock is never left behind to clear by hand. A
second node on the same directory is refused at once (`DataDirInUse`),
before it removes the connect file, opens the store or registers in etcd.
The file holds the holder's process id, for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from curvechat.protocol.errors import DataDirError, DataDirInUse

LOCK_FILE = "node.lock"


@contextlib.contextmanager
def holding(data_dir: Path) -> Iterator[None]:
    """`data_dir`, made if need be (0700), locked for this process while
    the block runs. Raises DataDirInUse if another process holds it,
    DataDirError if it cannot be made or locked."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DataDirError(f"cannot use the data directory {data_dir}: {exc}") from exc
    try:
        _lock(fd, data_dir)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, data_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        raise DataDirInUse(
            f"the data directory {data_dir} is in use by another node{holder}:"
            " stop it first, or give this one a --data of its own"
        ) from None
    except OSError as exc:
        raise DataDirError(f"cannot lock the data directory {data_dir}: {exc}") from exc
    with contextlib.suppress(OSError):  # the lock is what counts, not the id
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(fd: int) -> str:
    """`` (process N)`` as the lock file says, or nothing if it does not."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""
