"""Which epoch of a room is current: the one a client encrypts under and
numbers the next one from.

The server numbers the epochs (it takes a new one only as the one after its
current) and reports its current epoch in each listing and in the answer to
each change (`RoomInfo.epoch`). A key packet may name any epoch number its
giver chose: a member, or a former one, colluding with a server can box us a
key for an epoch that was never made (a million, or the next number before
anyone makes it), and the highest epoch held is then not the room's. A
client that took it for the room's went on asking for the epoch after it,
which every honest node refuses: it could neither send nor remove anyone
there again.

So the room's *top* is the epoch the server last reported, raised by an
epoch this process made (the server took it; one another process of this
home made is learned as any other member's rotation: a push, or the
refusal of a send under an older epoch), and by a key filed for the epoch
right above it (another member's rotation, told by a push: no listing needed);
the current epoch is the highest held at or below the top, and the next
one is the current one's next (the top's, when none is held: an epoch
reported that we hold no key for is either not ours yet or the server's
lie, and only the current one's next is known to be free of both). Keys
held above the top open messages; they are never encrypted under, never
boxed for a member we add, and a key fetch starts above the current epoch,
not above them. A server can lie about its epoch: a lower one makes the
client encrypt under an older key, which the E rules still judge (no
departure since it began, its giver still a member), and a higher one only
makes it ask for a number the server refuses; neither is more than the
denial of service a server can always do (security.md 6.7). Until the
first report (a fresh start, before the sync's listing) the top is the
highest epoch held, as a client held it before.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from curvechat.client.trust.rules import EpochRecord

Held = Mapping[int, EpochRecord]


class Position:
    def __init__(self) -> None:
        self._top: dict[str, int] = {}

    def reported(self, room: str, epoch: int) -> None:
        """The server says `epoch` is the room's current one."""
        self._top[room] = epoch

    def made(self, room: str, epoch: int) -> None:
        """The server took epoch `epoch`, which we made."""
        self._top[room] = max(self._top.get(room, -1), epoch)

    def filed(self, room: str, epochs: Iterable[int], held: Held) -> None:
        """Keys for `epochs` were filed (all of `held` now): those right
        above the top raise it, one after the other."""
        top = self._top.get(room)
        if top is None or top + 1 not in set(epochs):
            return
        while top + 1 in held:
            top += 1
        self._top[room] = top

    def top(self, room: str, held: Held) -> int:
        """The room's epoch as far as we know (-1: none yet)."""
        top = self._top.get(room)
        return max(held, default=-1) if top is None else top

    def current(self, room: str, held: Held) -> int | None:
        """The highest epoch held at or below the top: the one to encrypt
        under (None: we hold none)."""
        top = self.top(room, held)
        return max((e for e in held if e <= top), default=None)

    def next_epoch(self, room: str, held: Held) -> int:
        """The number of the room's next epoch."""
        current = self.current(room, held)
        return (self.top(room, held) if current is None else current) + 1
