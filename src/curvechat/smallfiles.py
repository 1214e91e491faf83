"""Small text files a user or an operator points at (a saved connect
string, a passphrase file, a node's name): read whole, as UTF-8, without
blocking on a FIFO or reading a huge file into memory.

It must never read anything but a regular file, or return text that was
not valid UTF-8.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SMALL_FILE = 64 * 1024


class FileTooLarge(OSError):
    """The file holds more than the reader takes."""


def read_small_file(path: Path, limit: int = MAX_SMALL_FILE) -> bytes:
    """The bytes of a regular file of at most `limit` bytes: OSError for
    anything else (a FIFO would block for ever, a directory cannot be read,
    a huge file would be read into memory)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLarge(f"{path.name} is over {limit} bytes")
    return data


def read_small_text(path: Path) -> str:
    """A small UTF-8 file (a passphrase, a connect string): OSError as
    `read_small_file`, UnicodeDecodeError for bytes that are not UTF-8."""
    return read_small_file(path).decode("utf-8")
