"""What one exchange carries (sans-IO): which part of a room's pool a
digest lists, and which envelopes fit in a reply or an offer (N7).

A digest lists at most `MAX_DIGEST` refs, and the listener gives what the
digest does not list, so a digest must say which part of the provisional
order it covers: else a pool larger than a digest has its older messages
given back to it in every reply, ahead of what it lacks. A pool that fits
is listed whole. A larger one is cut into slices of `MAX_DIGEST`, in
order; each exchange lists the newest slice (open above: anything newer
the listener holds is what we lack) and one older slice in turn, so that
over the turns every message we hold is listed once per round of slices.

This module must never do I/O or decide what is taken: it only cuts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from curvechat.protocol import messages as m
from curvechat.protocol import peer as p


class Ordered(Protocol):
    @property
    def order(self) -> tuple[int, str, str]: ...


T = TypeVar("T", bound=Ordered)
Slice = tuple[Sequence[T], p.At | None, p.At | None]


def at(item: Ordered) -> p.At:
    ts, sender, txn = item.order
    return p.At(ts, sender, txn)


def slices(items: Sequence[T], turn: int) -> list[Slice[T]]:
    """(listed, after, until) of each digest of exchange number `turn`,
    for `items` in provisional order."""
    n = p.MAX_DIGEST
    if len(items) <= n:
        return [(items, None, None)]
    older = items[:-n]
    out: list[Slice[T]] = [(items[-n:], at(older[-1]), None)]
    k = turn % -(-len(older) // n)
    part = older[k * n : (k + 1) * n]
    out.append((part, at(older[k * n - 1]) if k else None, at(part[-1])))
    return out


def part(after: p.At | None, until: p.At | None) -> Callable[[tuple[int, str, str]], bool]:
    """Whether a place in the order is in the part (after, until], as a test
    made once per digest and asked once per message."""
    lo = None if after is None else (after.ts, after.sender, after.txn)
    hi = None if until is None else (until.ts, until.sender, until.txn)
    return lambda order: (lo is None or order > lo) and (hi is None or order <= hi)


def bounded(envelopes: list[m.Envelope]) -> list[m.Envelope]:
    """N7: at most MAX_RELAY envelopes and RELAY_BYTES (at least one)."""
    budget = p.RELAY_BYTES
    out: list[m.Envelope] = []
    for env in itertools.islice(envelopes, p.MAX_RELAY):
        budget -= p.envelope_size(env)
        if out and budget < 0:
            break
        out.append(env)
    return out
