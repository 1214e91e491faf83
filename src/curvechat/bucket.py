"""A token bucket: what a rate limit is made of, on both sides.

A bucket holds up to `burst` tokens and refills at `rate` per second; each
request takes one, and an empty bucket means the request is refused. The
node limits each connection and user with it (`server/ratelimit.py`), the
peer core each member and connection (`client/peer/pacing.py`).

It must never read a clock of its own when the caller gives the time (the
sans-IO cores pass theirs), nor decide what a refusal means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float | None = None, n: float = 1.0) -> bool:
        """Take `n` tokens (a byte budget takes a frame's size) if there are."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def give(self, n: float = 1.0) -> None:
        """Put back `n` tokens taken for a request that was then not done
        (never past `burst`)."""
        self.tokens = min(self.burst, self.tokens + n)

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled by `now` (a new one is the same)."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst

    def retry_after(self, n: float = 1.0) -> float:
        return max(0.0, (n - self.tokens) / self.rate)


def take_keyed(
    buckets: dict[K, TokenBucket],
    key: K,
    now: float,
    *,
    rate: float,
    burst: float,
    limit: int,
    n: float = 1.0,
) -> bool:
    """One token from the bucket of `key`, made full if it has none. Past
    `limit` keys, those whose bucket has refilled go (a new one is the
    same); if that is not enough, the oldest too, down to three quarters of
    `limit`: a caller with thousands of keys in play at once gets them a
    fresh burst, but the memory stays bounded and a sweep is not paid for
    each new key."""
    bucket = buckets.get(key)
    if bucket is None:
        if len(buckets) >= limit:
            for old in [k for k, b in buckets.items() if b.full(now)]:
                del buckets[old]
            for old in list(buckets)[: len(buckets) - limit * 3 // 4]:
                del buckets[old]
        bucket = buckets[key] = TokenBucket(rate, burst, stamp=now)
    return bucket.take(now, n)
