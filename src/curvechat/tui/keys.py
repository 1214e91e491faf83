"""Identity keys as the TUI shows them: fingerprints, safety numbers and
pending key changes.

The engine exposes `key_info`, `accept_key` and `key_changes`; an engine
without them (an older one) is served from its cache and pins instead, so
/keys and /whois work either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curvechat.crypto.identity import fingerprint, safety_number


@dataclass(frozen=True, slots=True)
class KeyView:
    user: str
    fingerprint: str | None
    """Of the pinned key (None: never seen)."""
    safety_number: str | None
    changed: bool
    """A new key is offered and waits for the user's acceptance."""
    offered_fingerprint: str | None = None
    offered_safety_number: str | None = None


async def key_view(client: Any, user: str) -> KeyView:
    offered = _offered(client).get(user)
    me = client.identity
    info_fn = getattr(client, "key_info", None)
    if info_fn is not None:
        info = await info_fn(user)
        return KeyView(
            user=user,
            fingerprint=info.fingerprint,
            safety_number=info.safety_number,
            changed=bool(info.changed),
            offered_fingerprint=getattr(info, "offered_fingerprint", None)
            or (fingerprint(offered) if offered else None),
            offered_safety_number=getattr(info, "offered_safety_number", None)
            or (safety_number(me.user, me.sign_pub, user, offered) if offered else None),
        )
    pinned = client.cache.pin(user)
    if user == me.user:
        pinned = me.sign_pub
    return KeyView(
        user=user,
        fingerprint=fingerprint(pinned) if pinned else None,
        safety_number=(
            safety_number(me.user, me.sign_pub, user, pinned)
            if pinned and user != me.user
            else None
        ),
        changed=offered is not None,
        offered_fingerprint=fingerprint(offered) if offered else None,
        offered_safety_number=safety_number(me.user, me.sign_pub, user, offered)
        if offered
        else None,
    )


def _offered(client: Any) -> dict[str, bytes]:
    changes = getattr(client.cache, "key_changes", None)
    return dict(changes()) if changes is not None else {}


def pending_changes(client: Any) -> list[str]:
    fn = getattr(client, "key_changes", None)
    if fn is not None:
        return sorted(fn())
    return sorted(_offered(client))


async def accept_key(client: Any, user: str) -> bool:
    """Pin the offered key of `user`; False if no change was pending."""
    if user not in pending_changes(client):
        return False
    fn = getattr(client, "accept_key", None)
    if fn is not None:
        await fn(user)
    else:
        client.cache.accept_key_change(user)
    return True
