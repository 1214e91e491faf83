"""Which cached messages the front end was told of (`MessageReceived`).

Several processes of one home (a terminal client, a `tail`, a `send`) share
one cache; each stores what it receives, and the one that stores a row
first is the only one that would tell its front end of it. So each engine
keeps, per room, the seq up to which every cached row was told to its front
end (or was in the cache, up to the room's cursor, when the engine
started), and the seqs above that it told one by one (its own sends acked,
a page past a gap). A row the cache holds that is in neither was stored by
another process: `Parts` reads those from the cache and tells them, in seq
order. The seqs that mark passed while the cache held no row there (a
range the server withheld, which the cursor moves over) are kept, at most
`UNREADABLE_KEPT` a room, the newest: a row another process stores there
later is told then. (The start is the cursor, not the highest seq cached:
one row a server put at a seq far ahead would otherwise count every row
below it as told, in every process started after it.)

It also keeps the seqs it told as unreadable, or that the front end read
as unreadable from the cache (its history), at most `UNREADABLE_KEPT` a
room, the newest: a row another process then opens (its key came there
first) is not one this engine opens itself, so `Parts.tell_opened` reads
those seqs again, once another process wrote to the cache, and tells the
ones that opened. An older one shows opened when the front end next reads
the room from the cache (a restart, paging back).

Sans-IO: it never reads the cache, nor tells anything itself.
"""

from __future__ import annotations

UNREADABLE_KEPT = 512
"""Seqs told as unreadable kept per room, to be told again once opened."""


class Told:
    def __init__(self, start: dict[str, int]) -> None:
        self._upto = dict(start)
        self._above: dict[str, set[int]] = {}
        self._unreadable: dict[str, set[int]] = {}
        self._missing: dict[str, set[int]] = {}

    def unreadable(self, room: str) -> list[int]:
        """The seqs of `room` last told as unreadable, in order."""
        return sorted(self._unreadable.get(room, ()))

    def missing(self, room: str) -> list[int]:
        """The seqs of `room` the mark passed with no row cached there, in order."""
        return sorted(self._missing.get(room, ()))

    def shown(self, room: str, seq: int, *, readable: bool) -> None:
        """The front end was told of the row at `seq`, readable or not."""
        self.noted(room, seq)
        missing = self._missing.get(room)
        if missing:
            missing.discard(seq)
        if readable:
            kept = self._unreadable.get(room)
            if kept:
                kept.discard(seq)
        else:
            self.read_unreadable(room, [seq])

    def read_unreadable(self, room: str, seqs: list[int]) -> None:
        """The front end read these unreadable rows from the cache itself
        (its history): kept to be told again once opened, not marked told."""
        if not seqs:
            return
        _keep_newest(self._unreadable.setdefault(room, set()), seqs)

    def upto(self, room: str) -> int:
        """Every cached row of `room` up to this seq was told (or was there
        at the start)."""
        return self._upto.get(room, 0)

    def told(self, room: str, seq: int) -> bool:
        if seq in self._missing.get(room, ()):
            return False
        return seq <= self.upto(room) or seq in self._above.get(room, ())

    def noted(self, room: str, seq: int) -> None:
        """The front end was told of the row at `seq`."""
        upto = self._upto.get(room, 0)
        if seq == upto + 1 and not self._above.get(room):  # the usual case: the next one
            self._upto[room] = seq
        elif seq > upto:
            self._above.setdefault(room, set()).add(seq)
            self._close(room, upto)

    def passed(self, room: str, seq: int, missing: list[int] | None = None) -> None:
        """Every cached row of `room` up to `seq` was told now; the cache held
        none at the seqs in `missing`."""
        if missing:
            _keep_newest(self._missing.setdefault(room, set()), missing)
        if seq > self.upto(room):
            self._close(room, seq)

    def _close(self, room: str, upto: int) -> None:
        above = self._above.get(room, set())
        while upto + 1 in above:
            upto += 1
        self._upto[room] = upto
        if above:
            above.difference_update([s for s in above if s <= upto])


def _keep_newest(kept: set[int], seqs: list[int]) -> None:
    kept.update(seqs)
    if len(kept) > UNREADABLE_KEPT:
        newest = sorted(kept)[-UNREADABLE_KEPT:]
        kept.clear()
        kept.update(newest)
