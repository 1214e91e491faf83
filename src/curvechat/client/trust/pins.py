"""Trust on first use: the identity key pinned for each user (P1, P2).

A key is pinned, unverified, the first time it is seen. A different key for
a pinned user is recorded once as a pending change, told to the front end
once in this process (another process of the home may have recorded it
first), and refused with `KeyChanged` until the user accepts it. Pure: the
store it is given is its only memory; it must never do I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from curvechat.client import events as ev
from curvechat.client.errors import KeyChanged
from curvechat.client.trust.api import TrustStore


class Pins:
    def __init__(
        self, me: str, my_key: bytes, store: TrustStore, emit: Callable[[ev.Event], None]
    ) -> None:
        self.store = store
        self._emit = emit
        # What this process has told its front end, apart from the shared store:
        # another process of the home may have written the same rows first.
        self._told_changes: dict[str, bytes] = dict(store.key_changes())
        pinned = store.pin(me)
        if pinned is None:
            store.set_pin(me, my_key, verified=True)
        elif pinned != my_key:
            raise KeyChanged(me, pinned, my_key)

    def check(self, user: str, key: bytes, *, directory: bool = False) -> None:
        """P1: pin `key` for `user` on first sight, unverified. P2: on a
        different key, record the change (once), tell the front end (once in
        this process, also when another process of the home recorded it
        first), and raise KeyChanged. When the directory shows the pinned
        key again, a pending change is dropped: there is nothing left to
        accept."""
        pinned = self.store.pin(user)
        if pinned is None:
            self.store.set_pin(user, key)
        elif pinned == key:
            self._told_changes.pop(user, None)
            if directory and user in self.store.key_changes():
                self.store.drop_key_change(user)
                self._emit(
                    ev.Problem(
                        None,
                        f"the server shows the pinned key of {user} again; the pending key "
                        "change was dropped (compare safety numbers if in doubt)",
                    )
                )
        else:
            if self.store.key_changes().get(user) != key:
                self.store.record_key_change(user, key)
            if self._told_changes.get(user) != key:  # told once per process
                self._told_changes[user] = key
                self._emit(ev.KeyChangeDetected(user))
            raise KeyChanged(user, pinned, key)

    def verified(self, user: str) -> bool:
        pin = self.store.pin_record(user)
        return pin is not None and pin.verified

    def changed_among(self, users: Iterable[str]) -> str | None:
        """The first of `users` with a key change pending, or None."""
        changes = self.store.key_changes()
        return next((user for user in users if user in changes), None)

    def refuse_if_changed_among(self, users: Iterable[str]) -> None:
        user = self.changed_among(users)
        if user is not None:
            pinned = self.store.pin(user) or b""
            raise KeyChanged(user, pinned, self.store.key_changes()[user])
