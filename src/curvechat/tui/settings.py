"""Settings of the terminal client and where it keeps its own files.

The identity, the saved server and the cache live in the client home
(`curvechat.client.home`); the TUI adds one file there, `aliases.json`, for
the local nicknames set with /nick. Nothing here talks to the network.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curvechat.client.peer.shell import PeerOptions
from curvechat.protocol.text import visible
from curvechat.tui.format import ALIAS_MARK

ALIASES_FILE = "aliases.json"
KEYMAP_ENV = "CURVECHAT_KEYMAP"


@dataclass(frozen=True)
class ChatSettings:
    """Everything `make_app` needs; the CLI and the tests build one."""

    home: Path
    """The client home (identity, cache, saved server, aliases)."""
    server: str | None = None
    """Connect string; None: the one saved in the home, else the app asks."""
    passphrase: bytes | None = None
    """Identity passphrase; None: the app asks for it."""
    client_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra `ChatClient` options (liveness, back-off); tests make them fast."""
    peers: PeerOptions | None = field(default_factory=lambda: PeerOptions(mdns=True))
    """Peer-to-peer mode: listen for members (and find them by mDNS) so that
    rooms keep working while no server is reachable; None: off."""
    clock: Callable[[], float] = time.time
    """Wall clock for countdowns and local notices (fixed in snapshot tests)."""
    cursor_blink: bool = True
    """Blink the input cursor (off in snapshot tests)."""
    page_size: int = 50
    """Messages loaded per page of history."""
    keymap: Mapping[str, str] = field(default_factory=dict)
    """Binding id → keys, e.g. {"room.next": "alt+down"}."""

    @staticmethod
    def keymap_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Parse `CURVECHAT_KEYMAP="room.next=alt+down;room.prev=alt+up"`."""
        text = (environ if environ is not None else os.environ).get(KEYMAP_ENV, "")
        keymap: dict[str, str] = {}
        for item in text.split(";"):
            binding_id, sep, keys = item.partition("=")
            if sep and binding_id.strip() and keys.strip():
                keymap[binding_id.strip()] = keys.strip()
        return keymap


def aliases_path(home: Path) -> Path:
    return home / ALIASES_FILE


def load_aliases(home: Path) -> dict[str, str]:
    try:
        data = json.loads(aliases_path(home).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # One written by hand (or by a version that let it through) that could
    # drive the terminal or be read as markup, or that names two, is left out.
    aliases = {str(k): str(v) for k, v in data.items() if is_alias(str(v))}
    twice = {v for v in aliases.values() if list(aliases.values()).count(v) > 1}
    return {k: v for k, v in aliases.items() if v not in twice}


MAX_ALIAS = 32


def is_alias(text: str) -> bool:
    """One word of at most MAX_ALIAS characters, not starting with / # or @,
    with no character that could drive the terminal (`visible` would mark
    it), no white space, no square bracket (Textual's markup) and no `~`
    (the mark every alias is drawn with, `format.ALIAS_MARK`)."""
    return (
        0 < len(text) <= MAX_ALIAS
        and not text.startswith(("/", "#", "@"))
        and visible(text) == text
        and not any(ch.isspace() or ch in "[]" + ALIAS_MARK for ch in text)
    )


def save_aliases(home: Path, aliases: Mapping[str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = aliases_path(home)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(aliases.items())), indent=1) + "\n")
    tmp.replace(path)
