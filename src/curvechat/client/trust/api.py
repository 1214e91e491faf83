"""The trust core's interface: what it keeps between runs (`TrustStore`, which
the client's cache implements) and the decisions it hands back to the engine
(`Rotate`, `Grant`, `Opened`, `ListingPlan`).

This module must never decide anything: the core (`core.py`) does, by the
rule tables of `rules.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from curvechat.client.model import CachedRoom, Pin
from curvechat.client.trust.rules import EpochRecord


class TrustStore(Protocol):
    """What the core keeps between runs (the client's cache implements it)."""

    def ops(self, room: str, after: int = -1) -> list[tuple[bytes, bytes]]: ...
    def written_elsewhere(self) -> int: ...
    def op_at(self, room: str, index: int) -> tuple[bytes, bytes] | None: ...
    def add_ops(self, room: str, ops: list[tuple[int, bytes, bytes]]) -> None: ...
    def drop_ops(self, room: str) -> None: ...
    def epoch_records(self, room: str) -> dict[int, EpochRecord]: ...
    def put_epoch_key(
        self,
        room: str,
        epoch: int,
        after_op: int,
        key: bytes,
        sender: str | None,
        *,
        replace: bool = False,
    ) -> None: ...
    def put_alternate(
        self, room: str, epoch: int, after_op: int, key: bytes, sender: str
    ) -> bool: ...
    def alternates(self, room: str, epoch: int) -> list[EpochRecord]: ...
    def epoch_usage(self, room: str, epoch: int) -> tuple[int, int]: ...
    def shared_with(self, room: str, epoch: int) -> frozenset[str]: ...
    def record_shared(self, room: str, epochs: list[int], user: str) -> None: ...
    def pin(self, user: str) -> bytes | None: ...
    def pin_record(self, user: str) -> Pin | None: ...
    def set_pin(self, user: str, sign_pub: bytes, *, verified: bool = False) -> None: ...
    def key_changes(self) -> dict[str, bytes]: ...
    def record_key_change(self, user: str, offered: bytes) -> None: ...
    def drop_key_change(self, user: str) -> None: ...
    def seen_txn(self, room: str, sender: str, txn: str) -> int | None: ...
    def mark_replay(self, room: str, seq: int, original: int) -> None: ...
    def room(self, room: str) -> CachedRoom | None: ...
    def rooms(self, *, include_left: bool = False) -> list[CachedRoom]: ...
    def ensure_room(self, room: str) -> None: ...
    def set_left(self, room: str, left: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Rotate:
    """Decision: make a new epoch before encrypting, because `rule` forbids
    the current one (or none is held)."""

    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    """Decision: encrypt under `record`, at most `left` more messages (the
    epoch's count limit); a later message asks again."""

    record: EpochRecord
    left: int


@dataclass(frozen=True, slots=True)
class Opened:
    """Decision about one stored message: its text, or why it is not shown."""

    sender: str
    text: str | None
    sent_ms: int | None
    error: str | None
    rule: str | None = None
    """The rule that refused it (M1-M6), None if it opened."""


@dataclass(frozen=True, slots=True)
class ListingPlan:
    """What to fetch after a room listing: the server's claims (R2) decide
    only this."""

    fetch_ops: list[str]
    fetch_keys: dict[str, int]
    """room -> the lowest epoch to ask for."""
