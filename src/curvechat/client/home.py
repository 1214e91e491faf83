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

from curvechat.protocol.errors import ConfigError
from curvechat.smallfiles import read_small_text

IDENTITY_FILE = "identity.key"
SERVER_FILE = "server"
CACHE_FILE = "cache.db"

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
