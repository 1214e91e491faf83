"""Token buckets for per-connection and per-user request rates.

A bucket (`curvechat.bucket`) holds up to `burst` tokens and refills at
`rate` per second; each request takes one. An empty bucket means the
request is refused with `rate_limited` (and nothing else happens), so one
noisy client cannot starve the others or the store. A user's requests also
take their size from a byte budget, kept across reconnects, which bounds
what one account makes the node store.
"""

from __future__ import annotations

from dataclasses import dataclass

from curvechat.bucket import TokenBucket

__all__ = ["BYTES_BURST_SECONDS", "USERS_KEPT", "RateLimits", "TokenBucket"]

BYTES_BURST_SECONDS = 16.0
"""A user's byte budget holds this many seconds' worth (4 MiB by default)."""

USERS_KEPT = 10_000
"""Users whose byte budget is kept after their last connection went (a
reconnect must not start from a full budget); past it, the refilled go."""


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
