"""Token buckets for per-connection and per-user request rates.

A bucket (`curvechat.bucket`) holds up to `burst` tokens and refills at
`rate` per second; each request takes one. An empty bucket means the
request is refused with `rate_limited` (and nothing else happens), so one
noisy client cannot starve the others or the store.

Every frame also takes its size from a byte budget (`ByteBudgets`), which
bounds what one account makes the node store: its user's, once the frame's
CURVE key is known to be a user's (all of the user's connections and keys
share it), else its key's, which holds a few frames. Budgets are kept after
their last connection went, so reconnecting, or registering another key,
does not refill them.
"""

from __future__ import annotations

from dataclasses import dataclass

from curvechat.bucket import TokenBucket, take_keyed
from curvechat.protocol.limits import MAX_FRAME_BYTES
from curvechat.server.addresses import DEFAULT_PER_ADDRESS, address_key

__all__ = [
    "BYTES_BURST_SECONDS",
    "REGISTRATION_V6_PREFIX",
    "USERS_KEPT",
    "ByteBudgets",
    "RateLimits",
    "RegistrationPace",
    "TokenBucket",
]

BYTES_BURST_SECONDS = 16.0
"""A user's byte budget holds this many seconds' worth (4 MiB by default)."""

USERS_KEPT = 10_000
"""Users (and keys) whose byte budget is kept after their last connection
went (a reconnect must not start from a full budget); past it, the
refilled go."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    per_connection: float = 500.0
    """Requests per second one connection may sustain."""
    per_user: float = 1000.0
    """Requests per second all connections of one user may sustain together."""
    burst_seconds: float = 2.0
    """How many seconds' worth of requests may come at once."""
    user_bytes: float = 256 * 1024
    """Bytes of requests a second all connections of one user may sustain
    together (what one account can make a node store), after a burst of
    `BYTES_BURST_SECONDS`' worth."""
    new_epochs: float = 1.0
    """New epochs a second one member may start in one room, after a burst
    of 20 (server/epochpace.py)."""
    per_address: int = DEFAULT_PER_ADDRESS
    """Connections one address may hold on the client port (0: no limit;
    server/addresses.py)."""
    per_address_loopback: bool = False
    """Whether loopback addresses are counted too (connections, registrations)."""
    registrations_per_hour: float = 30.0
    """New users (or keys) one address may register an hour, after as many
    at once (0: no limit; server/handlers.py)."""


KEY_BURST_FRAMES = 4
"""Frames of the largest size the budget of a key no user is known for
holds (1 MiB): enough for a connection's first requests, little for a
key registered afresh to store."""


class ByteBudgets:
    """The byte budgets of users and of keys not yet known to be a user's
    (sans-IO: the caller gives the time)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._users: dict[str, TokenBucket] = {}
        self._keys: dict[str, TokenBucket] = {}

    def charge(self, user: str | None, key: str, size: int, now: float) -> str | None:
        """Take a frame of `size` bytes from `user`'s budget (None: the frame's
        CURVE key `key` is no known user's); None if it may go on, else why
        it may not. A budget always holds at least one frame of the largest
        size, so that every frame passes in time; a larger one is charged as
        that size (it is refused as `too_large` next, never stored)."""
        size = min(size, MAX_FRAME_BYTES)
        if user is not None:
            buckets, holder = self._users, user
            burst = max(self.rate * BYTES_BURST_SECONDS, MAX_FRAME_BYTES)
        else:
            buckets, holder, burst = self._keys, key, KEY_BURST_FRAMES * MAX_FRAME_BYTES
        rate = self.rate
        if take_keyed(buckets, holder, now, rate=rate, burst=burst, limit=USERS_KEPT, n=size):
            return None
        wait = buckets[holder].retry_after(size)
        who = user or "this key"
        return f"more than {rate:,.0f} bytes/s of requests for {who}; retry in {wait:.2f} s"


REGISTRATION_V6_PREFIX = 48
"""Registrations are paced per IPv6 /48, not /64: one site (or a tunnel
broker's free allocation) is a /48, 65,536 /64s."""


class RegistrationPace:
    """New users (or keys) per address (server/addresses.py; an IPv6 /48)
    and hour, after as many at once: accounts are free, and each brings
    limits of its own (sans-IO: the caller gives the peer and the time)."""

    def __init__(self, per_hour: float, *, loopback: bool = False) -> None:
        self.per_hour = per_hour
        self.loopback = loopback
        self._buckets: dict[str, TokenBucket] = {}

    def _address(self, peer: object) -> str | None:
        """What `peer` is paced as (None: not paced)."""
        if not self.per_hour:
            return None
        return address_key(peer, self.loopback, REGISTRATION_V6_PREFIX)

    def refusal(self, peer: object, now: float) -> str | None:
        """Why a registration from `peer` (a socket's `getpeername()`, or
        None when unknown) must wait, or None."""
        rate = self.per_hour
        address = self._address(peer)
        if address is None:
            return None
        if take_keyed(self._buckets, address, now, rate=rate / 3600, burst=rate, limit=USERS_KEPT):
            return None
        return f"more than {rate:g} registrations an hour from {address}; try again later"

    def refund(self, peer: object) -> None:
        """Give back what `refusal` took for a registration that then did
        not happen (the name or key belonged to someone else, or the store
        failed): only registrations that bind something are paced."""
        address = self._address(peer)
        bucket = self._buckets.get(address) if address is not None else None
        if bucket is not None:
            bucket.give()
