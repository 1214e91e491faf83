"""What happened to whom: a bounded, in-memory log of network failures and
recoveries (client disconnects and timeouts, reconnects, node up/down, store
unavailable), newest last, each with a sequence number so that a dashboard
can fetch only what it has not seen.

It must never block or grow without bound: the oldest entries fall off.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger("curvechat.events")

Level = Literal["info", "warning", "error"]
EVENT_LOG_MAX = 1000


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    t: int  # Unix time in ms
    kind: str  # e.g. "client_disconnected", "store_unavailable"
    level: Level
    node: str
    detail: str
    user: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    def __init__(self, node: str, maxlen: int = EVENT_LOG_MAX) -> None:
        self.node = node
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._seq = 0

    def add(
        self, kind: str, detail: str, *, level: Level = "info", user: str | None = None
    ) -> Event:
        self._seq += 1
        event = Event(self._seq, int(time.time() * 1000), kind, level, self.node, detail, user)
        self._events.append(event)
        log.log(logging.WARNING if level != "info" else logging.INFO, "event %s: %s", kind, detail)
        return event

    def after(self, seq: int = 0, limit: int = EVENT_LOG_MAX) -> list[Event]:
        """Events with a sequence number above `seq`, oldest first (at most `limit`, newest)."""
        found = [e for e in self._events if e.seq > seq]
        return found[-limit:]

    @property
    def last_seq(self) -> int:
        return self._seq

    def __len__(self) -> int:
        return len(self._events)
