"""The connection's states and the events that move between them.

Theory of operation
-------------------
A client starts OFFLINE. `start` moves it to CONNECTING with one server of
its list. A welcome from that server makes it LIVE; a handshake failure or a
hello that times out makes it RECONNECTING, waiting a jittered back-off before
it retries with the next server (Freelance). While LIVE it pings; a missed
liveness window, a dropped TCP connection or a server that restarted under it
(a new boot id) makes it RECONNECTING again. `close` from anywhere ends in
CLOSED, which nothing leaves.

The table below is the whole machine; `transition` refuses anything else, and
tests and the docs read the same table.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class ConnState(enum.StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class ConnEvent(enum.StrEnum):
    START = "start"
    WELCOMED = "welcomed"
    FAILED = "failed"
    LOST = "lost"
    RETRY = "retry"
    CLOSE = "close"


TRANSITIONS: dict[tuple[ConnState, ConnEvent], ConnState] = {
    (ConnState.OFFLINE, ConnEvent.START): ConnState.CONNECTING,
    (ConnState.CONNECTING, ConnEvent.WELCOMED): ConnState.LIVE,
    (ConnState.CONNECTING, ConnEvent.FAILED): ConnState.RECONNECTING,
    (ConnState.LIVE, ConnEvent.LOST): ConnState.RECONNECTING,
    (ConnState.RECONNECTING, ConnEvent.RETRY): ConnState.CONNECTING,
    **{(s, ConnEvent.CLOSE): ConnState.CLOSED for s in ConnState if s is not ConnState.CLOSED},
}


class InvalidTransition(RuntimeError):
    pass


def transition(state: ConnState, event: ConnEvent) -> ConnState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event} is not allowed in state {state}") from None


@dataclass(frozen=True, slots=True)
class ConnStatus:
    """What a UI shows about the connection."""

    state: ConnState
    endpoint: str | None = None
    attempt: int = 0
    """Consecutive failed attempts (0 while live)."""
    next_retry_at: float | None = None
    """Wall-clock time of the next attempt while RECONNECTING."""
    rtt_ms: float | None = None
    detail: str = ""
    """Why the state changed, in words (e.g. "no reply for 6.0 s")."""
    node: str | None = None
    since: float = 0.0
    moving: bool = False
    """Reconnecting because the node asked its clients to move (it is
    draining), not because something failed."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with full jitter: attempt n waits a uniform random
    time in [0, min(cap, base * 2**n)], so clients cut at the same moment do
    not come back in the same second."""

    base: float = 0.25
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return (rng or random).uniform(0.0, ceiling)
