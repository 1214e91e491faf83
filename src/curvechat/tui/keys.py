"""Identity keys as the TUI shows them: fingerprints, safety numbers,
whether the user verified a key, and pending key changes (all from the
engine's `keys` part)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.client.keys import KeyInfo

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient

KeyView = KeyInfo


async def key_view(client: ChatClient, user: str) -> KeyInfo:
    return await client.key_info(user)


def known_key_view(client: ChatClient, user: str) -> KeyInfo:
    """What the cache holds for `user` now, without asking the directory:
    the key change pending at this moment."""
    return client.known_key_info(user)


def pending_changes(client: ChatClient) -> list[str]:
    return client.key_changes()


async def accept_key(client: ChatClient, user: str, key: bytes) -> None:
    """Pin `key`, the offered key of `user` the user was shown. Raises
    NotReady: no_key_change, or key_changed_again when another key is
    offered by now (nothing is pinned then)."""
    await client.accept_key(user, key)


def trust_mark(verified: bool, changed: bool) -> str:
    """How a member's key state reads next to their name."""
    if changed:
        return " ⚠ key changed"
    return "" if verified else " (unverified)"
