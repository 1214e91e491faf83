"""How much work a peer may ask of us per second (rule N10, sans-IO), and
how often what it relays and we refuse is told to the user.

Token buckets (`curvechat.bucket`), each `rate` a second and twice that at
once, keyed by what they bound: a connection's requests (by its transport
key, all rooms together, before the request is read), a member's requests
about one room, and how many of a member's envelopes we verify. The caller
gives the time (monotonic seconds) and decides what a refusal means.

This module must never do I/O, read a clock of its own, or decide who a
peer is: it is asked only about keys a member's record announces, and
about members N1 let in.
"""

from __future__ import annotations

from typing import Final, TypeVar

from curvechat.bucket import TokenBucket, take_keyed

KEY_ASKS_PER_S: Final = 200.0
"""Requests one connection may make of us per second, all rooms together."""
ASKS_PER_S: Final = 20.0
"""Requests one member may make of us per second about one room: a round
asks up to four per shared room (two digests and two offers) each second."""
VERIFIES_PER_S: Final = 500.0
"""Envelopes of one member we verify per second: about 30 ms of Ed25519 and
decryption a second."""
TOLD_EVERY_S: Final = 60.0
"""A member's refused envelopes are told at most once this often per room
and reason: a member relaying junk must not flood the user's screen."""


MAX_BUCKETS: Final = 4096
"""Buckets of one kind kept before the full ones (idle long enough to have
refilled) are let go, and then the oldest (`take_keyed`)."""


class Pacing:
    def __init__(self) -> None:
        self._keys: dict[bytes, TokenBucket] = {}
        self.asks: dict[tuple[str, str], TokenBucket] = {}
        self.verifies: dict[str, TokenBucket] = {}
        self.told: dict[tuple[str, str, str], TokenBucket] = {}

    def connection(self, transport_pub: bytes, now: float) -> bool:
        """One more request read from a connection with this key?"""
        return _take(self._keys, transport_pub, KEY_ASKS_PER_S, now)

    def ask(self, user: str, room: str, now: float) -> bool:
        """One more request of `user` about `room`?"""
        return _take(self.asks, (user, room), ASKS_PER_S, now)

    def verify(self, user: str, now: float) -> bool:
        """One more envelope of `user` verified?"""
        return _take(self.verifies, user, VERIFIES_PER_S, now)

    def tell(self, user: str, room: str, code: str, now: float) -> bool:
        """Tell the user now that `user` relayed envelopes of `room` we
        refused for `code`?"""
        return _take(self.told, (user, room, code), 1 / TOLD_EVERY_S, now, burst=1.0)


K = TypeVar("K")


def _take(
    buckets: dict[K, TokenBucket], key: K, rate: float, now: float, burst: float | None = None
) -> bool:
    burst = 2 * rate if burst is None else burst
    return take_keyed(buckets, key, now, rate=rate, burst=burst, limit=MAX_BUCKETS)
