"""The client's plain records: what the cache hands out and events carry.

No I/O here, so the trust core and the events can use them without loading
the cache's SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedMessage:
    room: str
    seq: int
    ts_ms: int
    sender: str
    txn: str
    sent_ms: int | None
    text: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    room: str
    txn: str
    text: str
    created_ms: int
    sealed: bytes = b""
    """The text as the cache sealed it at rest (empty: not read from the cache)."""


@dataclass(frozen=True, slots=True)
class CachedRoom:
    room: str
    cursor: int
    head: int
    left: bool
    unread: int


@dataclass(frozen=True, slots=True)
class Pin:
    """A peer's pinned identity key. `verified` is set only by the user, after
    comparing safety numbers; a key first seen through the server is not."""

    user: str
    key: bytes
    verified: bool
    first_seen_ms: int
