"""What the engine tells a front end (CLI, TUI): plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from curvechat.client.model import CachedMessage
from curvechat.client.state import ConnStatus


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: ConnStatus


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: CachedMessage
    mine: bool
    live: bool
    """True for a push, False for a message fetched by sync or history."""


@dataclass(frozen=True, slots=True)
class ReplayMarked:
    """The message at `seq` is a replay of the one at `original`: shown
    there no more (an unreadable entry now, which a message that opens
    later at `seq` replaces)."""

    room: str
    seq: int
    original: int


@dataclass(frozen=True, slots=True)
class SendAcked:
    """The server acknowledged (stored) the message `txn` as `seq`: it is no
    longer pending. Comes after the `MessageReceived` of the same message."""

    room: str
    txn: str
    seq: int
    ts_ms: int = 0
    """The server's timestamp of the stored message."""


@dataclass(frozen=True, slots=True)
class SendFailed:
    room: str
    txn: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RoomUpdated:
    room: str
    reason: str


@dataclass(frozen=True, slots=True)
class KeyChangeDetected:
    """A peer's identity key differs from the pinned one. Nothing is encrypted
    to them (nor sent in a room they are in) until the user accepts the new
    key, after comparing safety numbers out of band."""

    user: str


@dataclass(frozen=True, slots=True)
class CaughtUp:
    messages: int
    """Messages fetched by the sync that followed a (re)connection."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Something the user should know that is not an error of theirs (a log
    that failed verification, a packet that did not decrypt, …)."""

    room: str | None
    message: str


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """A message taken peer to peer while no server is reachable: not yet on
    the server, shown at once in a provisional order (the sender's clock).
    The server's copy, a `MessageReceived` with the same sender and txn,
    replaces it when a server is back."""

    room: str
    sender: str
    txn: str
    text: str
    sent_ms: int
    via: str
    """The member who relayed it to us (the sender, or another member)."""


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """Peer-to-peer mode: `active` while no server is reachable and we try
    peers; `peers` is how many members answered in the last round."""

    active: bool
    peers: int


Event = (
    StatusChanged
    | MessageReceived
    | ReplayMarked
    | SendAcked
    | SendFailed
    | RoomUpdated
    | KeyChangeDetected
    | CaughtUp
    | Problem
    | PeerMessage
    | PeerStatus
)
