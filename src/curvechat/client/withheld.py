"""Messages the server did not hand out when asked for them.

An honest node's page of a room asked for after seq c holds c+1, c+2, ...
with nothing left out (every seq up to the room's head holds a message,
numbered and stored in one transaction), and a pushed seq s means every
seq below s is stored. So a seq that a page asked for from below it skips,
or that a gap fill below a pushed seq does not bring, was withheld: by a
server that hides it, or by a node that cannot read what its store holds.

Such seqs are recorded (`withheldrows.py`) and the room's cursor moves over
them; the user is told once per room and connection; each sync after
connecting asks for `MAX_ASKED` of the recorded ranges again, taking all
rooms' ranges in turn from one sync to the next, and what comes back, or
is pushed later at such a seq, is verified and stored in its place like
any message (the cache takes a stored seq out of the record). Before, the
cursor stopped at the first such seq for good: every push after it
fetched everything from there again, and a sync with more than a page
past it asked for the same page forever, never ready.

An honest node also cuts a page at its reply budget (`REPLY_BUDGET_BYTES`
of envelopes): a page shorter than asked for whose envelopes fill at
least half of that budget (`cut_at_budget`) was cut, not refused, and the gap fill
and the ranges asked again go on after its last seq. Anything shorter ends
them: a server can keep a client asking only by sending it at least half
a budget a page.

A server names seqs as it likes, so what it can make a client pass over
is bounded: at most `MAX_WITHHELD` seqs of a room are recorded at a time,
and a gap that does not fit is not recorded (nor any above it): the
cursor stays below it, as before.

`missing` and `within` are the rules, without I/O. This module must never
record a seq above the highest one the server served or pushed, nor decide
what a message says (`ingest_page`, through the trust core, does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from curvechat.client import events as ev
from curvechat.client.errors import ServerRefused
from curvechat.client.parts import Parts
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_PAGE, REPLY_BUDGET_BYTES

MAX_ASKED = 64
"""Ranges asked for again at one sync, over all rooms."""

MAX_WITHHELD = 10_000
"""The most seqs of one room recorded as withheld at a time: what a server
can make a client pass over with made-up seqs (a push far ahead of the
room, or pages that jump), and what the record holds. A node that cannot
read part of its store leaves gaps of a message run each (at most 64 KiB
of envelopes)."""

Ingest = Callable[[str, list[m.StoredMessage]], Awaitable[int]]
Ask = Callable[[m.AnyRequest, Any], Awaitable[Any]]


def missing(after: int, served: Iterable[int], top: int | None = None) -> list[tuple[int, int]]:
    """The ranges (lo, hi) of seqs above `after` and up to `top` (default:
    the highest served) that a page asked for after `after` did not hold,
    up to the first one wider than `MAX_WITHHELD` (not included)."""
    seqs = sorted({s for s in served if s > after})
    top = (seqs[-1] if seqs else after) if top is None else top
    ranges, expect = [], after + 1
    for s in [*(s for s in seqs if s <= top), top + 1]:
        if s > expect:
            if s - expect > MAX_WITHHELD:
                break
            ranges.append((expect, s - 1))
        expect = s + 1
    return ranges


def cut_at_budget(items: Iterable[m.StoredMessage]) -> bool:
    """Whether a page shorter than asked for was cut at the node's reply
    budget: its ciphertexts fill at least half of it (an honest node cuts a
    page only when the next envelope, at most `MAX_CIPHERTEXT_BYTES` and its
    names, would pass the whole budget)."""
    return sum(len(item.envelope.ct) for item in items) >= REPLY_BUDGET_BYTES // 2


class Page(NamedTuple):
    after: int
    """The seq the page was asked for after."""
    items: list[m.StoredMessage]
    """What it held of the range, in the order it came."""
    last: int | None
    """The seq it speaks for up to (the next page goes on after it), or
    None: it ends the range early, the server will not give the rest."""


async def pages(ask: Ask, room: str, after: int, hi: int) -> AsyncIterator[Page]:
    """The messages of `room` in after+1..hi, a `history` page at a time:
    a page holding fewer than asked for ends them (`last` None), unless the
    node cut it at its reply budget (`cut_at_budget`): then the next goes
    on after it. Each page moves past at least one seq, so there are at
    most hi - after of them."""
    while after < hi:
        top = min(hi, after + MAX_PAGE)
        reply = await ask(m.History(room=room, after=after, limit=top - after), m.Messages)
        items = [item for item in reply.items if after < item.seq <= top]
        seqs = {item.seq for item in items}
        if len(seqs) < top - after:
            if not seqs or not cut_at_budget(reply.items):
                yield Page(after, items, None)
                return
            top = max(seqs)
        yield Page(after, items, top)
        after = top


def within(ranges: list[tuple[int, int]], room_left: int) -> list[tuple[int, int]]:
    """The first of `ranges` that fit in `room_left` seqs, up to the first
    that does not."""
    out = []
    for lo, hi in ranges:
        room_left -= hi - lo + 1
        if room_left < 0:
            break
        out.append((lo, hi))
    return out


SHOWN = 5
"""Ranges named in what the user is told."""


def said(ranges: list[tuple[int, int]]) -> str:
    """What the user is told about `ranges` of one room (past `SHOWN`, "...")."""
    shown = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges[:SHOWN])
    more = ", ..." if len(ranges) > SHOWN else ""
    single = len(ranges) == 1 and ranges[0][0] == ranges[0][1]
    what = "a message" if single else "messages"
    return (
        f"the server did not hand out {what} of this room (seq {shown}{more})"
        " when asked: a server that hides messages, or one that cannot read them;"
        " asked for again at each connection"
    )


class Withheld:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self._told: set[str] = set()
        """Rooms told about in this connection."""
        self._syncing: dict[str, list[tuple[int, int]]] | None = None
        """While the sync after connecting runs: what it found, per room, told
        at its end in one line a room (the first `SHOWN` ranges are named)."""
        self._turn: tuple[str, int] = ("", -1)
        """(room, lo) of the last range asked for again."""

    def new_round(self) -> None:
        """A new connection's sync begins: each room may be told about once more."""
        self._told.clear()
        self._syncing = {}

    def sync_done(self) -> None:
        """Tell what the sync after connecting found, one line a room."""
        found, self._syncing = self._syncing or {}, None
        for room, ranges in found.items():
            self._told.add(room)
            self.p.emit(ev.Problem(room, said(ranges)))

    def note(
        self, room: str, after: int, items: Iterable[m.StoredMessage], top: int | None = None
    ) -> None:
        """A page asked for after `after` (up to `top`, a pushed seq's
        predecessor, if given) held `items`, already stored: record what it
        left out. Lock held."""
        cache = self.p.cache
        ranges = missing(after, (item.seq for item in items), top)
        if ranges:  # (a room's record is read only when there is something to add)
            ranges = within(ranges, MAX_WITHHELD - cache.withheld_count(room))
        if not ranges:
            return
        cache.add_withheld(room, ranges)
        if self._syncing is not None:
            found = self._syncing.setdefault(room, [])
            found += ranges[: SHOWN + 1 - len(found)]
        elif room not in self._told:
            self._told.add(room)
            self.p.emit(ev.Problem(room, said(ranges)))

    async def ask_again(self, ingest: Ingest) -> None:
        """Ask for `MAX_ASKED` of the ranges recorded as withheld once more,
        after those asked last time (all rooms' in turn), and store what
        comes back in its place. Lock held."""
        cache = self.p.cache
        turn = cache.withheld_after(*self._turn, MAX_ASKED)
        if len(turn) < MAX_ASKED:  # round again from the first
            first = cache.withheld_after("", -1, MAX_ASKED - len(turn))
            turn += [r for r in first if r not in turn]
        gone: set[str] = set()
        for room, lo, hi in turn:
            self._turn = (room, lo)
            if room in gone:
                continue
            try:
                async for page in pages(self.p.ask, room, lo - 1, hi):
                    if page.items:  # stored in their place, they leave the record
                        await ingest(room, page.items)
            except ServerRefused as exc:
                if exc.code not in (ErrorCode.NOT_MEMBER, ErrorCode.NO_SUCH_ROOM):
                    raise
                gone.add(room)
