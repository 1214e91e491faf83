"""Messages that did not open, tried again: the decisions, without I/O (the
engine's `recover.py` asks and stores).

A message the client could not open (no key for its epoch yet, M2; a sender
its verified log does not have yet or does not allow, M3, M4; a signature or
an AEAD that does not check, M5; another room, M1; a replay, M6) is cached
as a row with an error, which holds its seq: the cursor moves over it. The
envelope it came in is kept with it (sealed at rest), except for a replay.
This module decides what becomes of such rows:

- **When** (`Recovery.begin`): a pass over a room's rows is due once per
  round (a new connection, a key change the user accepted) and per change of
  what can make a kept envelope open, the room's verified log and the epochs
  it holds keys for. Neither changes without signed evidence, so a server
  cannot make passes happen by repeating itself.
- **Which** (`pick_reopen`, `still_stuck`, `pick_refetch`): a pass opens
  again the rows' kept envelopes (at most `REOPEN_PER_PASS`), then asks a
  node again for the seqs still not open, by `history`: at most `REFETCH_PER_PASS` seqs in a
  pass and `REFETCH_PER_ROUND` in a round, each at most once a pass, those
  asked least recently first, then the newest.
- **What replaces what** (`reopened`, `refetched`): only a row that did not
  open is ever rewritten. A copy that opens takes its place (same seq) and
  is shown, unless a message already shown at another seq carries its
  sender and txn (M6): the row then becomes a replay marker, and the message
  already shown stays where it is. A fetched copy that did not open is kept
  instead of the row's only if it may still open (M2-M4) and the row's copy
  may not.

It must never touch a socket, the cache or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from curvechat.client.trust.api import Opened

REOPEN_PER_PASS = 500
"""Kept envelopes opened again in one pass over a room."""

REFETCH_PER_PASS = 64
"""Seqs asked for again in one pass over a room."""

REFETCH_PER_ROUND = 512
"""Seqs asked for again in one round (connection), all rooms together."""

WAITING = frozenset({"M2", "M3", "M4"})
"""Refusals a key or an op learned later can lift."""

Context = tuple[int, tuple[int, ...]]
"""What decides whether a kept envelope opens: the index of the room's
verified log and the epochs it holds keys for."""


class Fate(enum.Enum):
    """What a copy of the message at an error row's seq does to the row."""

    OPEN = "open"  # it opened: it replaces the row (same seq) and is shown
    REPLAY = "replay"  # it opened, but is shown at another seq: the row marks it a replay
    HOLD = "hold"  # not open: the row keeps this copy, and its verdict, for a later pass
    KEEP = "keep"  # the row stays as it is


def reopened(copy: Opened, *, was: str, shown_at: int | None) -> Fate:
    """A row's kept envelope, opened again: `was` is the row's error, and
    `shown_at` the seq of a message shown with the copy's sender and txn."""
    if copy.error is None:
        return Fate.OPEN if shown_at is None else Fate.REPLAY
    return Fate.KEEP if copy.error == was else Fate.HOLD


def refetched(copy: Opened, *, kept: Opened | None, shown_at: int | None) -> Fate:
    """A copy a node served again for a row's seq: `kept` is how the row's
    kept envelope fared in the same pass (None: the row keeps none)."""
    if copy.error is None:
        return Fate.OPEN if shown_at is None else Fate.REPLAY
    if copy.rule in WAITING and (kept is None or kept.rule not in WAITING):
        return Fate.HOLD
    return Fate.KEEP


def still_stuck(
    has_envelope: Mapping[int, bool], reopened: Collection[int], settled: Collection[int]
) -> list[int]:
    """The rows to ask a node for again, after a pass opened some kept
    envelopes again (`reopened`) and settled some rows: those not settled
    that keep no envelope or whose envelope was just tried (one waiting its
    turn to be opened again waits for that first), in seq order."""
    return sorted(
        seq
        for seq, has in has_envelope.items()
        if seq not in settled and (not has or seq in reopened)
    )


def runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """`seqs` (those from 1) as `history` requests: (after, limit) for each
    run of consecutive seqs, in order."""
    out: list[tuple[int, int]] = []
    for seq in sorted(s for s in set(seqs) if s >= 1):
        if out and out[-1][0] + out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((seq - 1, 1))
    return out


@dataclass
class Recovery:
    """What this client has tried so far (in memory: a restart is a new
    round anyway)."""

    round: int = 0
    _passes: dict[str, tuple[int, Context]] = field(default_factory=dict)
    _pass: int = 0
    _spent: int = 0
    """Seqs asked for again in this round."""
    _reopened: dict[tuple[str, int], int] = field(default_factory=dict)
    _asked: dict[tuple[str, int], int] = field(default_factory=dict)
    """(room, seq) -> the pass that last tried it that way."""

    def new_round(self) -> None:
        """A new connection, or a key change the user accepted: every room
        gets a pass again, and the round's refetch budget is whole."""
        self.round += 1
        self._spent = 0

    def begin(self, room: str, context: Context) -> bool:
        """Whether a pass over `room`'s rows is due in `context`; if so, it
        starts (and is not due again until the round or the context changes)."""
        key = (self.round, context)
        if self._passes.get(room) == key:
            return False
        self._passes[room] = key
        self._pass += 1
        return True

    def pick_reopen(self, room: str, seqs: Iterable[int]) -> list[int]:
        """Of the rows at `seqs`, which keep an envelope, those to open
        again in this pass, in seq order."""
        return self._pick(room, seqs, self._reopened, REOPEN_PER_PASS)

    def pick_refetch(self, room: str, seqs: Iterable[int]) -> list[int]:
        """Of the rows at `seqs`, still not open, those to ask a node for
        again in this pass, in seq order."""
        cap = min(REFETCH_PER_PASS, REFETCH_PER_ROUND - self._spent)
        chosen = self._pick(room, seqs, self._asked, cap)
        self._spent += len(chosen)
        return chosen

    def settled(self, room: str, seq: int) -> None:
        """The row at `seq` opened or became a replay marker: forget it."""
        self._reopened.pop((room, seq), None)
        self._asked.pop((room, seq), None)

    def _pick(
        self, room: str, seqs: Iterable[int], last: dict[tuple[str, int], int], cap: int
    ) -> list[int]:
        """Up to `cap` of `seqs`, those tried least recently (in `last`)
        first, then the newest; recorded as tried in this pass."""
        order = sorted(set(seqs), key=lambda s: (last.get((room, s), 0), -s))
        chosen = order[: max(cap, 0)]
        for seq in chosen:
            last[(room, seq)] = self._pass
        return sorted(chosen)
