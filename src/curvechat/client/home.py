"""Where a user's client keeps its files (one module for every path).

A home holds `identity.key` (sealed with the passphrase), `server` (the last
connect string used) and `cache.db` (the local cache). The default home is
`$XDG_DATA_HOME/curvechat` (`~/.local/share/curvechat`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IDENTITY_FILE = "identity.key"
SERVER_FILE = "server"
CACHE_FILE = "cache.db"


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
            text = self.server_file.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def save_server(self, connect: str) -> None:
        self.ensure()
        self.server_file.write_text(connect.strip() + "\n")
