"""Token buckets for per-connection and per-user request rates.

A bucket holds up to `burst` tokens and refills at `rate` per second; each
request takes one. An empty bucket means the request is refused with
`rate_limited` (and nothing else happens), so one noisy client cannot starve
the others or the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RateLimits:
    per_connection: float = 500.0
    """Requests per second one connection may sustain."""
    per_user: float = 1000.0
    """Requests per second all connections of one user may sustain together."""
    burst_seconds: float = 2.0
    """How many seconds' worth of requests may come at once."""


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)
