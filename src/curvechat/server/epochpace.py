"""How often a member may start a new epoch of a room (`new_epoch`), or
share history with a member it added (`share_keys`: each stored page is a
push that makes the recipient fetch), or a user change their contacts
(`set_contacts`, keyed by the room ""; one `EpochPace` each).

Every epoch costs each member of the room a key packet stored for ever and
fetched by every client, and each one makes the senders' current key old:
a member who started 400 epochs a second (well under the connection's
request rate) kept every other member's sends from being acked for 30 s and
an admin's removal of them from ever landing (each attempt met a newer
epoch). An honest client starts one after 100 of its own messages, a week,
or a departure: far below the default of one a second. Removals carry
their own epoch and are not paced here.

It must never decide more than whether this member may go on now.
"""

from __future__ import annotations

import time
from typing import Final

from curvechat.bucket import TokenBucket, take_keyed

BURST: Final = 20.0
"""New epochs one member may start in one room at once; then `rate` a
second (`RateLimits.new_epochs`, `serve --rate-epochs`, default 1)."""

MAX_TRACKED: Final = 4096
"""(room, member) pairs kept; past it, those whose bucket is full again
are dropped (a dropped pair starts full, which is what it was), and if
that is not enough the oldest too (which lets them start 20 at once again:
only a user acting in thousands of rooms a second gets that)."""


class EpochPace:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def allow(self, room: str, user: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return take_keyed(
            self._buckets, (room, user), now, rate=self.rate, burst=BURST, limit=MAX_TRACKED
        )
