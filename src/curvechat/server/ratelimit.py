"""Token buckets for per-connection and per-user request rates.

A bucket (`curvechat.bucket`) holds up to `burst` tokens and refills at
`rate` per second; each request takes one. An empty bucket means the
request is refused with `rate_limited` (and nothing else happens), so one
noisy client cannot starve the others or the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from curvechat.bucket import TokenBucket

__all__ = ["RateLimits", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    per_connection: float = 500.0
    """Requests per second one connection may sustain."""
    per_user: float = 1000.0
    """Requests per second all connections of one user may sustain together."""
    burst_seconds: float = 2.0
    """How many seconds' worth of requests may come at once."""
    new_epochs: float = 1.0
    """New epochs a second one member may start in one room, after a burst
    of 20 (server/epochpace.py)."""
