"""Records heard on the local network by mDNS, kept to be judged again when
our rooms change (sans-IO): a record of a user we share no room with yet is
refused now, and taken once we do.

Anyone on the network can send records under any name, and any number of
listeners under one: what is kept is bounded. For users we know (their
pinned key signed the record) the newest MAX_PER_USER each, one per
listener, always; for others the newest MAX_HEARD in all, so records under
made-up names cannot push out those of members. A record whose service
went away (its client closed) is forgotten.

This module must never believe a record: the peer core judges each one
when it is taken.
"""

from __future__ import annotations

from typing import Final

from curvechat.client.peer.records import MAX_PER_USER, Listener, PeerRecords
from curvechat.protocol import messages as m

MAX_HEARD: Final = 256
"""Records heard from users we do not know yet (the oldest goes first)."""


class HeardRecords:
    def __init__(self, core: PeerRecords) -> None:
        self.core = core
        self.known: dict[str, dict[Listener, m.SignedRecord]] = {}
        """User -> listener -> its record, for users we know."""
        self.strangers: dict[Listener, m.SignedRecord] = {}
        """The same for users we do not know yet, at most MAX_HEARD."""

    def hear(self, signed: m.SignedRecord) -> None:
        heard = self.core.heard_from(signed)
        if heard is None:
            return
        at, known = heard
        kept = self.known.setdefault(at.user, {}) if known else self.strangers
        kept.pop(at, None)  # the newest heard goes last
        kept[at] = signed
        if len(kept) > (MAX_PER_USER if known else MAX_HEARD):
            del kept[next(iter(kept))]

    def forget(self, signed: m.SignedRecord) -> None:
        """`signed`'s service went away: its client closed."""
        heard = self.core.heard_from(signed)
        if heard is None:
            return
        at, _ = heard
        if self.strangers.get(at) == signed:
            del self.strangers[at]
        kept = self.known.get(at.user, {})
        if kept.get(at) == signed:
            del kept[at]
            if not kept:
                del self.known[at.user]

    def records(self) -> list[m.SignedRecord]:
        return [
            *(signed for kept in self.known.values() for signed in kept.values()),
            *self.strangers.values(),
        ]
