"""The chat screen's model of one room's history: messages by sequence
number, the user's messages still in the outbox (and members' taken peer
to peer), local notices; what the `Timeline` widget draws.

It must never draw, read the cache or talk to the engine: the screen feeds
it what came in, and it decides only where each entry goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from curvechat.client.cache import CachedMessage

EntryKind = Literal["message", "pending", "notice"]
NoticeLevel = Literal["info", "error", "warning"]

KEPT_NOTICES = 500
"""Local notices a room's log keeps: the newest."""


@dataclass(slots=True)
class Entry:
    kind: EntryKind
    ts_ms: int
    text: str
    sender: str = ""
    seq: int = 0
    txn: str = ""
    error: str | None = None
    """Message: why it could not be read. Pending: why it was not sent."""
    level: NoticeLevel = "info"


@dataclass
class RoomLog:
    room: str
    me: str
    """Who our own pending entries (sender "") are from: a pending entry is
    matched by sender and txn, since any member can reuse another's txn."""
    entries: list[Entry] = field(default_factory=list)
    has_older: bool = True
    loaded: bool = False
    trims: int = 0
    """Times `trim` dropped messages: an older page asked for before one
    would leave a gap between it and what is kept."""
    has_newer: bool = False
    """Messages newer than the last one kept are in the cache only: the log
    took no more while its view did not follow (`hold_newer`), and the
    newest page brings them back (`newest_page`)."""
    _pending: set[tuple[str, str]] = field(default_factory=set, repr=False)
    """(sender, txn) of the pending entries (ours under `me`)."""
    _newer_room: int | None = field(default=None, repr=False)
    """While held: how many newer messages the log still takes."""
    _notices: int = field(default=0, repr=False)
    """How many of the entries are notices."""

    @property
    def first_seq(self) -> int | None:
        seqs = [e.seq for e in self.entries if e.kind == "message"]
        return min(seqs) if seqs else None

    @property
    def last_seq(self) -> int:
        return max((e.seq for e in self.entries if e.kind == "message"), default=0)

    def seqs(self) -> set[int]:
        return {e.seq for e in self.entries if e.kind == "message"}

    def add_message(self, msg: CachedMessage) -> bool:
        """Place `msg` by sequence number; drop the pending copy of it. A
        message that opened takes the place of one at its seq that did not
        (the engine opened it later). False if it was already shown, or if
        it is older than the loaded pages (`_place`)."""
        self._drop_pending(msg.txn, msg.sender)
        entry = Entry(
            "message",
            msg.ts_ms,
            msg.text or "",
            sender=msg.sender,
            seq=msg.seq,
            txn=msg.txn,
            error=msg.error,
        )
        last = next((e for e in reversed(self.entries) if e.kind == "message"), None)
        if last is not None and msg.seq > last.seq:  # the usual case: the newest, in order
            if not self._takes_newer():
                return False
            self.entries.append(entry)
            return True
        for i, e in enumerate(self.entries):
            if e.kind == "message" and e.seq == msg.seq:
                if e.error is None or msg.error is not None:
                    return False
                self.entries[i] = entry
                return True
        return self._place(entry)

    def acked(self, txn: str, seq: int, ts_ms: int, sender: str) -> bool:
        """The server acknowledged the pending message `txn` as `seq`: it is
        pending no more, and takes its place by `seq` (unless the message
        itself is already shown). False if `txn` was not pending here."""
        pending = [e for e in self.entries if self._is_pending(e, txn, sender)]
        if not pending:
            return False
        self._drop_pending(txn, sender)
        mine = pending[0]
        self._place(Entry("message", ts_ms or mine.ts_ms, mine.text, sender, seq, txn))
        return True

    def _from(self, e: Entry) -> str:
        return e.sender or self.me  # our own pending entries have no sender

    def _is_pending(self, e: Entry, txn: str, sender: str) -> bool:
        return e.kind == "pending" and e.txn == txn and self._from(e) == sender

    def _drop_pending(self, txn: str, sender: str) -> None:
        if (sender, txn) in self._pending:
            self._pending.discard((sender, txn))
            self.entries = [e for e in self.entries if not self._is_pending(e, txn, sender)]

    def _place(self, entry: Entry) -> bool:
        """Put `entry` in seq order, unless a message at its seq is shown,
        or it is older than the pages loaded while older ones are not (a
        message the engine opened late, far back): the older pages bring it
        in its place, and it must not become the first loaded message, from
        which they are asked for (history in between would be skipped)."""
        if entry.seq in self.seqs():
            return False
        if entry.seq > self.last_seq and not self._takes_newer():
            return False
        first = self.first_seq
        if self.loaded and self.has_older and first is not None and entry.seq < first:
            return False
        later = [i for i, e in enumerate(self.entries) if e.kind == "message" and e.seq > entry.seq]
        if later:
            self.entries.insert(later[0], entry)
        else:
            self.entries.append(entry)
        return True

    def hold_newer(self, room_for: int) -> None:
        """The view does not follow the newest message: from now on take at
        most `room_for` newer ones, then none (`has_newer`), so that a flood
        while the user reads older messages does not grow the log without
        bound. A hold already in place stays as it is."""
        if self._newer_room is None:
            self._newer_room = room_for

    @property
    def held(self) -> bool:
        """Whether newer messages are held back (`hold_newer`)."""
        return self._newer_room is not None

    def release_newer(self) -> None:
        """The view follows again and nothing newer was left out: take every
        newer message again. (If some were, the newest page must be loaded.)"""
        if not self.has_newer:
            self._newer_room = None

    def expect_newest(self) -> None:
        """The newest page is being read: take what comes in meanwhile (the
        page is merged with it, and what is left below it dropped)."""
        self.has_newer, self._newer_room = False, None

    def _takes_newer(self) -> bool:
        """Whether a message newer than the last one kept may be added."""
        room = self._newer_room
        if room is None:
            return True
        if room <= 0:
            self.has_newer = True
            return False
        self._newer_room = room - 1
        return True

    def newest_page(self, msgs: list[CachedMessage], *, failed: bool = False) -> None:
        """The room's newest page (`msgs`) is loaded, merged
        with what came in meanwhile; a message that came in older than the
        page (opened late, far back) is left to the older pages."""
        self.expect_newest()
        for msg in msgs:
            self.add_message(msg)
        if msgs:
            low = min(msg.seq for msg in msgs)
            self.entries = [e for e in self.entries if e.kind != "message" or e.seq >= low]
        first = self.first_seq
        self.has_older = failed or (first is not None and first > 1)
        self.loaded = True

    def trim(self, keep: int) -> None:
        """Keep the newest `keep` messages, and every notice and pending
        entry (the cache holds neither): the older messages are older pages
        again, read from the cache when scrolled up to. A page asked for
        before a trim must not be added after it (`trims`)."""
        at = [i for i, e in enumerate(self.entries) if e.kind == "message"]
        if len(at) <= keep:
            return
        cut = at[-keep]  # messages are in seq order among the entries
        older, self.entries = self.entries[:cut], self.entries[cut:]
        self.entries[:0] = [e for e in older if e.kind != "message"]
        self.has_older = True
        self.trims += 1

    def mark_replay(self, seq: int, original: int) -> bool:
        """The message shown at `seq` is a replay of the one at `original`:
        it is shown as unreadable from now on (so a message that opens there
        later takes its place). False if no message at `seq` is shown."""
        for e in self.entries:
            if e.kind == "message" and e.seq == seq:
                e.text, e.error = "", f"replay of message {original}"
                return True
        return False

    def prepend(self, msgs: list[CachedMessage]) -> int:
        """Add an older page; returns how many were new."""
        known = self.seqs()
        fresh = [
            Entry("message", m.ts_ms, m.text or "", m.sender, m.seq, m.txn, m.error)
            for m in msgs
            if m.seq not in known
        ]
        self.entries = fresh + self.entries
        return len(fresh)

    def add_pending(self, txn: str, text: str, created_ms: int, sender: str = "") -> None:
        """An entry not on the server yet: ours (no `sender`), or a member's
        taken peer to peer. The server's copy replaces it (by sender and txn)."""
        who = sender or self.me
        if any(e.txn == txn and self._from(e) == who for e in self.entries):
            return
        self.entries.append(Entry("pending", created_ms, text, sender=sender, txn=txn))
        self._pending.add((who, txn))

    def fail(self, txn: str, reason: str) -> None:
        """Our pending message `txn` was not sent, for `reason`."""
        for e in self.entries:
            if self._is_pending(e, txn, self.me):
                e.error = reason

    def notice(self, text: str, ts_ms: int, level: NoticeLevel = "info") -> None:
        """A local line; past `KEPT_NOTICES` of them, the oldest goes (the
        cache does not keep notices, and a flood of them must not grow the
        log for ever)."""
        self.entries.append(Entry("notice", ts_ms, text, level=level))
        self._notices += 1
        if self._notices > KEPT_NOTICES:
            oldest = next(i for i, e in enumerate(self.entries) if e.kind == "notice")
            del self.entries[oldest]
            self._notices -= 1

    def ordered(self) -> list[Entry]:
        """Messages and notices as they came, the outbox last (it is not yet
        part of the room's order)."""
        pending = [e for e in self.entries if e.kind == "pending"]
        # peer-to-peer: the provisional order (sender's clock, sender, txn)
        pending.sort(key=lambda e: (e.ts_ms, e.sender, e.txn))
        return [e for e in self.entries if e.kind != "pending"] + pending
