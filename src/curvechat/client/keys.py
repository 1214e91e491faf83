"""Pins and safety numbers: what a user sees of the keys their client trusts.

The directory lookups go through the trust core's pin rules (P1-P3); this
part only asks the server and shapes the answers for a front end.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from curvechat.client.errors import (
    KeyChanged,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
)
from curvechat.client.parts import Parts
from curvechat.client.sync import Sync
from curvechat.crypto.identity import fingerprint, safety_number
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.limits import is_user_name
from curvechat.protocol.text import clip


@dataclass(frozen=True, slots=True)
class KeyInfo:
    user: str
    fingerprint: str
    safety_number: str
    """Compare this with the peer (in person, by phone) to rule out a key
    substituted by the server."""
    changed: bool
    """A new key was seen and awaits `accept_key`."""
    verified: bool = False
    """The user said they compared safety numbers for the pinned key."""
    offered_fingerprint: str | None = None
    offered_safety_number: str | None = None
    offered: bytes | None = None
    """The offered identity key itself: what `accept_key` is given once the
    user compared its safety number."""


class Keys:
    def __init__(self, parts: Parts, sync: Sync) -> None:
        self.p = parts
        self.sync = sync

    async def lookup(self, users: list[str]) -> dict[str, bytes]:
        """Identity keys of `users` from the directory, checked against (or
        pinned on first use into) the local pins. Raises KeyChanged."""
        for user in users:
            if not is_user_name(user):
                raise NotReady(f"{clip(user)!r} is not a valid user name", "bad_name")
        wanted = sorted(set(users))
        reply = await self.p.ask(m.Lookup(users=wanted), m.Directory)
        found = {u.user: u.sign_pub for u in reply.users if u.user in wanted}
        missing = sorted(set(users) - set(found))
        if missing:
            raise ServerRefused(ErrorCode.NO_SUCH_USER, f"no such user: {clip(', '.join(missing))}")
        for user, key in found.items():
            self.p.core.check_pin(user, key, directory=True)
        return found

    def info(self, user: str) -> KeyInfo:
        """Fingerprint, safety number and state of the pin of `user`."""
        me, mine = self.p.me, self.p.identity.sign_pub
        pin = self.p.cache.pin_record(user)
        if pin is None:
            raise NotReady(f"no key known for {clip(user)} (not connected?)", "no_such_user")
        offered = self.p.cache.key_changes().get(user)
        return KeyInfo(
            user=user,
            fingerprint=fingerprint(pin.key),
            safety_number=safety_number(me, mine, user, pin.key),
            changed=offered is not None,
            verified=pin.verified,
            offered_fingerprint=fingerprint(offered) if offered else None,
            offered_safety_number=safety_number(me, mine, user, offered) if offered else None,
            offered=offered,
        )

    async def key_info(self, user: str) -> KeyInfo:
        """`info`, after asking the directory when connected (which also
        notices a changed key)."""
        if user != self.p.me and self.p.conn.live:
            with contextlib.suppress(KeyChanged):
                await self.lookup([user])
        return self.info(user)

    def verify(self, user: str, verified: bool = True) -> KeyInfo:
        """P3: the user compared safety numbers with `user` (or withdraws that)."""
        if user == self.p.me:
            raise NotReady("your own key needs no verifying", "bad_name")
        if self.p.cache.pin(user) is None:
            raise NotReady(f"no key known for {clip(user)}", "no_such_user")
        if user in self.p.cache.key_changes():
            raise NotReady(
                f"the key of {user} changed: accept the new one first (keys --accept)",
                "key_changed",
            )
        self.p.cache.set_verified(user, verified)
        return self.info(user)

    def key_changes(self) -> list[str]:
        """Users whose identity key changed and awaits acceptance."""
        return sorted(self.p.cache.key_changes())

    async def accept(self, user: str, key: bytes) -> None:
        """Accept the changed key of `user`, `key` being the offered key the
        user was shown and compared (its safety number): pinned unverified,
        then the rooms are verified again. Refused (nothing pinned) when no
        change is pending, or when the key offered now is another one: the
        offer changed since it was shown, and the new one needs comparing."""
        offered = self.p.cache.accept_key_change(user, key)
        if offered is None:
            raise NotReady(f"no key change is pending for {clip(user)}", "no_key_change")
        if offered != key:
            raise NotReady(
                f"the key {clip(user)} offers changed since it was shown (it is now "
                f"{fingerprint(offered)}); nothing was accepted: compare the new safety "
                "number with them first",
                "key_changed_again",
            )
        if self.p.conn.live:
            async with self.p.lock:
                self.sync.recover.new_round(key_accepted=True)  # what it refused, tried again
                with contextlib.suppress(NotConnected, RequestTimeout):
                    await self.sync.full()
