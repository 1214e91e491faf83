"""Messages that did not open, tried again: the decisions, without I/O (the
engine's `recover.py` asks and stores).

A message the client could not open (no key for its epoch yet, M2; a sender
its verified log does not have yet or does not allow, M3, M4; a signature or
an AEAD that does not check, M5; another room, M1; a replay, M6) is cached
as a row with an error and the rule that refused it, which holds its seq:
the cursor moves over it. The envelope it came in is kept with it (sealed
at rest) only if a key or an op may still open it (M2-M4,
`keeps_envelope`); it is dropped when it no longer decodes, or cannot go
at its seq. This module decides what becomes of such rows:

- **When** (`Recovery.begin`): a pass over a room's rows is due once per
  round (a new connection, a key change the user accepted) and per change
  of what can make a kept envelope open: the index of the room's verified
  log, or the number of epochs it holds keys for (which only grows). Neither
  changes without signed evidence, so a server cannot make passes happen
  by repeating itself (but it can start a round by dropping the connection).
- **Which rows are opened again**: only those the change can unblock. A
  row refused for want of a key (M2) is opened again once its epoch's key
  is held; one refused by the log (M3, M4) once per index of the log (and
  in the first pass of a round that followed an accepted key change), those
  past a seq cursor; at most `REOPEN_PER_PASS` a pass, and a pass that
  left some makes the next one due. A row refused for good (M1, M5, M6)
  is never opened again: it can only be asked for again.
- **Which are asked for again** (`pick_refetch`): those no key or op can
  open (no envelope kept, or M1, M5, M6) first, then the others, each kind
  in turn from the newest down from where the last pass left off; at most
  `REFETCH_PER_PASS` seqs a pass and `REFETCH_PER_ROUND` a round, covered
  by at most `REFETCH_SPANS` `history` requests of at most a page each,
  asked within `REFETCH_SECONDS` (one deadline for all the passes a sync
  makes, those its refreshes start included).
- **What replaces what** (`reopened`, `refetched`, `placed`): only a row
  that did not open is ever rewritten (a row that opened only ever becomes
  a replay marker, by M6). A copy that opens takes its place
  (same seq), is shown and, if someone else sent it, counts as unread (a
  row that did not open never does), unless a message already shown at
  another seq carries its sender and txn (M6): the row then becomes a
  replay marker, and the message already shown stays where it is. A fetched copy that did
  not open is kept instead of the row's only if it may still open (M2-M4)
  and the row's copy may not. No copy is used where its epoch does not lie
  between those of the nearest rows that opened before and after it.

What it remembers is a few numbers per room, whatever the number of rows,
for the rooms the verified log says the user is in (a room a listing only
hides keeps them: a server cannot make every row refused by the log open
again by leaving the room out of one listing). It must never touch a
socket, the cache or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from curvechat.client.trust.api import Opened
from curvechat.protocol.limits import MAX_PAGE

REOPEN_PER_PASS = 500
"""Kept envelopes opened again in one pass over a room."""

REFETCH_PER_PASS = 64
"""Seqs asked for again in one pass over a room."""

REFETCH_PER_ROUND = 512
"""Seqs asked for again in one round (connection), all rooms together."""

REFETCH_SPANS = 4
"""`history` requests a pass makes at most; each covers at most a page."""

REFETCH_SECONDS = 5.0
"""How long the asking of a pass may take, or of all the passes of one
sync together (those started by the refreshes it makes, and those at its
end): then it stops asking."""

WAITING = frozenset({"M2", "M3", "M4"})
"""Refusals a key or an op learned later can lift."""


def keeps_envelope(rule: str | None) -> bool:
    """Whether a row refused by `rule` keeps the envelope it came in: only
    if a key or an op may still open it (M2-M4); a row refused for good is
    only ever asked for again, by seq."""
    return rule in WAITING


Context = tuple[int, int]
"""What decides whether a kept envelope opens: the index of the room's
verified log and the number of epochs it holds keys for."""


class Fate(enum.Enum):
    """What a copy of the message at an error row's seq does to the row."""

    OPEN = "open"  # it opened: it replaces the row (same seq) and is shown
    REPLAY = "replay"  # it opened, but is shown at another seq: the row marks it a replay
    HOLD = "hold"  # not open: the row keeps this copy, and its verdict, for a later pass
    KEEP = "keep"  # the row stays as it is
    DROP = "drop"  # the row keeps its verdict but not its envelope, which cannot go here


def reopened(copy: Opened, *, was: str, shown_at: int | None) -> Fate:
    """A row's kept envelope, opened again: `was` is the row's error, and
    `shown_at` the seq of a message shown with the copy's sender and txn."""
    if copy.error is None:
        return Fate.OPEN if shown_at is None else Fate.REPLAY
    return Fate.KEEP if copy.error == was else Fate.HOLD


def refetched(copy: Opened, *, waits: bool, shown_at: int | None) -> Fate:
    """A copy a node served again for a row's seq: `waits` says whether
    the row keeps an envelope that a key or an op may still open."""
    if copy.error is None:
        return Fate.OPEN if shown_at is None else Fate.REPLAY
    if copy.rule in WAITING and not waits:
        return Fate.HOLD
    return Fate.KEEP


def fits(epoch: int, around: tuple[int | None, int | None]) -> bool:
    """Whether a copy under `epoch` may go between rows that opened under
    the epochs `around` (before, after; None: no such row). An honest
    server stores a message under the room's current epoch only, so epochs
    never go down as seqs go up."""
    before, after = around
    return (before is None or before <= epoch) and (after is None or epoch <= after)


def placed(fate: Fate, epoch: int, around: tuple[int | None, int | None], *, own: bool) -> Fate:
    """`fate`, unless the copy (under `epoch`) does not fit `around`: then
    it is not used. The row's own envelope (`own`) can then never open
    there: the row drops it, and is asked for again by seq only."""
    if fate in (Fate.KEEP, Fate.DROP) or fits(epoch, around):
        return fate
    return Fate.DROP if own else Fate.KEEP


@dataclass(frozen=True, slots=True)
class Pass:
    """A pass that is due, and what it does."""

    log_from: int | None
    """Rows refused by the log (M3, M4) past this seq are opened again
    (None: none are)."""
    refetch: bool
    """Whether it asks a node again (not in a pass that only goes on opening
    what the last one left)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One `history` request of a pass, and the seqs it is for."""

    after: int
    limit: int
    seqs: frozenset[int]


@dataclass
class _Room:
    round: int
    context: Context
    log_from: int | None = 0
    more: bool = False
    """The last pass left rows to open again (its cap)."""
    below: list[int | None] = field(default_factory=lambda: [None, None])
    """Where asking goes on, for each kind (refused for good, waiting)."""


@dataclass
class Recovery:
    """What this client has tried so far (in memory: a restart is a new
    round anyway), a few numbers per room."""

    round: int = 0
    _rekeyed: int = -1
    """The round that a key change the user accepted began."""
    _spent: int = 0
    """Seqs asked for again in this round."""
    _rooms: dict[str, _Room] = field(default_factory=dict)

    def new_round(self, *, key_accepted: bool = False) -> None:
        """A new connection, or a key change the user accepted: every room
        gets a pass again, and the round's refetch budget is whole."""
        self.round += 1
        self._spent = 0
        if key_accepted:
            self._rekeyed = self.round

    def begin(self, room: str, context: Context) -> Pass | None:
        """The pass over `room`'s rows due in `context`, if one is (it is not
        due again until the round or the context changes, or unless it
        leaves rows to open again)."""
        st = self._rooms.get(room)
        if st is None:
            self._rooms[room] = _Room(self.round, context)
            return Pass(log_from=0, refetch=True)
        fresh = st.round != self.round or st.context != context
        if not fresh and not st.more:
            return None
        rekeyed = st.round != self.round and self.round == self._rekeyed
        if st.context[0] != context[0] or rekeyed:
            st.log_from = 0  # the log moved, or a key change was accepted: all of them again
        st.round, st.context = self.round, context
        return Pass(log_from=st.log_from, refetch=fresh)

    def reopened_to(self, room: str, *, more_keys: bool, log_to: int | None) -> None:
        """What the pass opened again: `more_keys` if rows waiting for a
        key were left (the cap), `log_to` the last row refused by the log
        it tried (None: it reached the end of them)."""
        st = self._rooms.get(room)
        if st is not None:
            st.log_from = log_to
            st.more = more_keys or log_to is not None

    def below(self, room: str) -> tuple[int | None, int | None]:
        """Where asking goes on in `room`, for rows refused for good and for
        rows that wait (None: from the newest)."""
        st = self._rooms.get(room)
        return (None, None) if st is None else (st.below[0], st.below[1])

    def pick_refetch(self, room: str, first: Sequence[int], rest: Sequence[int]) -> list[Span]:
        """Of the rows refused for good (`first`) and those that wait
        (`rest`), each in the order they are to be asked in (from where the
        last pass left off), those to ask a node for again in this pass, as
        `history` requests."""
        st = self._rooms.get(room)
        cap = min(REFETCH_PER_PASS, REFETCH_PER_ROUND - self._spent)
        spans: list[tuple[list[int], set[int]]] = []  # ([lowest, highest], seqs) a request
        count = 0
        for kind, seqs in enumerate((first, rest)):
            for seq in seqs:
                into = next((s for s in spans if _within(s[0], seq)), None)
                if count >= cap or (into is None and len(spans) >= REFETCH_SPANS):
                    break
                if into is None:
                    into = ([seq, seq], set())
                    spans.append(into)
                into[0][:] = [min(into[0][0], seq), max(into[0][1], seq)]
                into[1].add(seq)
                count += 1
                if st is not None:
                    st.below[kind] = seq
        self._spent += count
        return [
            Span(low - 1, high - low + 1, frozenset(seqs))
            for (low, high), seqs in sorted(spans, key=lambda s: s[0])
        ]

    def in_turn(self, rooms: Sequence[str]) -> list[str]:
        """`rooms` in the order their passes go at the end of a sync, which
        share one deadline: each round from the next room on, so that a
        node that answers slowly in one room does not keep the others'
        turn for good."""
        start = self.round % len(rooms) if rooms else 0
        return [*rooms[start:], *rooms[:start]]

    def known(self) -> list[str]:
        """The rooms it remembers something of."""
        return list(self._rooms)

    def keep(self, rooms: Collection[str]) -> None:
        """Forget the rooms not in `rooms` (those the verified log says the
        user is not in). A room a listing only hides is kept: forgetting it
        would make its next pass open every row refused by the log again."""
        for room in [r for r in self._rooms if r not in rooms]:
            del self._rooms[room]

    def forget(self, room: str) -> None:
        """Forget `room` (the verified log says the user is not in it)."""
        self._rooms.pop(room, None)


def _within(span: list[int], seq: int) -> bool:
    """Whether one `history` request can cover `span` ([lowest, highest]) and `seq`."""
    return max(span[1], seq) - min(span[0], seq) < MAX_PAGE
