"""Where a user's client keeps its files (one module for every path).

A home holds `identity.key` (sealed with the passphrase), `server` (the last
connect string used) and `cache.db` (the local cache). The default home is
`$XDG_DATA_HOME/curvechat` (`~/.local/share/curvechat`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from curvechat.protocol.errors import ConfigError, DataDirError
from curvechat.protocol.text import clip, visible
from curvechat.smallfiles import read_small_text

IDENTITY_FILE = "identity.key"
SERVER_FILE = "server"
CACHE_FILE = "cache.db"
NAME_ROOM = 40
"""Room for the longest name a home holds (`identity.key` staged under a
hidden name while `init` makes it)."""

log = logging.getLogger("curvechat.client")


def default_home() -> Path:
    env = os.environ.get("CURVECHAT_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "curvechat"


@dataclass(frozen=True, slots=True)
class Home:
    path: Path

    @property
    def identity(self) -> Path:
        return self.path / IDENTITY_FILE

    @property
    def server_file(self) -> Path:
        return self.path / SERVER_FILE

    @property
    def cache(self) -> Path:
        return self.path / CACHE_FILE

    def check(self) -> None:
        """Raise DataDirError if no file can be made or looked for in the
        home: a name in its path, or the path with a file name, longer than
        the file system takes, or a lookup the system refuses. (The system
        reports a long name only once the directories before it exist: a
        home to make would fail half made.)"""
        try:
            path = Path(os.path.abspath(self.path))
        except OSError as exc:  # a relative path, and the working directory is gone
            self._refuse(exc.strerror or str(exc))
        name_max, path_max = _name_limits(path)
        if max(len(os.fsencode(part)) for part in path.parts) > name_max:
            self._refuse(f"file name too long (a name in it is over {name_max} bytes)")
        if len(os.fsencode(path)) + NAME_ROOM >= path_max:
            self._refuse(f"file name too long (with its files, over {path_max} bytes)")
        try:
            self.identity.exists()
        except OSError as exc:
            self._refuse(exc.strerror or str(exc))

    def _refuse(self, why: str) -> NoReturn:
        raise DataDirError(f"cannot use the home {visible(clip(str(self.path)))}: {why}")

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def saved_server(self) -> str | None:
        try:
            text = read_small_text(self.server_file).strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the saved server address {self.server_file}: {exc}"
                " (remove the file, or give --server)"
            ) from exc
        return text or None

    def save_server(self, connect: str) -> None:
        """Keep `connect` for the next command (a convenience: a file that
        cannot be written is said in the log, and nothing else changes)."""
        try:
            self.ensure()
            self.server_file.write_text(connect.strip() + "\n")
        except OSError as exc:
            log.warning("could not keep the server address in %s: %s", self.server_file, exc)


def _name_limits(path: Path) -> tuple[int, int]:
    """The longest file name and path the file system of `path` takes (of
    the nearest directory above it that exists)."""
    for where in [path, *path.parents]:
        try:
            return os.pathconf(where, "PC_NAME_MAX"), os.pathconf(where, "PC_PATH_MAX")
        except (OSError, ValueError):
            continue
    return 255, 4096
