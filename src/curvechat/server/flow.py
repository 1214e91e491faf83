"""Flow control (sans-IO): how many bytes a node may hold for a connection
that does not read.

ZeroMQ queues every frame for a peer until the peer reads it, so a client
that keeps its connection open but never reads would make the node hold every
push meant for it. The node therefore counts the bytes it queued for each
connection and asks, every `mark_every` bytes, for proof of reading: a
`push_mark` frame with a random number, which the client echoes in a ping
(`read_mark`). It can only echo it after reading everything queued before.

Pushes (not replies) to a connection are withheld while it holds more than
`per_connection` unconfirmed bytes, or, once the node as a whole holds more
than `node` bytes, while it holds more than one mark's worth. A connection
counts toward the node's bytes for at most its own budget and one mark. When it has
read its way back under half its budget it is told to resync (`push_resync`)
and fetches what it missed by seq. Nothing is lost: withheld pushes are
messages the store already holds.

This module must never do I/O: the node asks it and acts on its answers.
"""

from __future__ import annotations

import secrets
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

MARK_EVERY = 256 * 1024
PER_CONNECTION = 4 * 1024 * 1024
NODE = 256 * 1024 * 1024
MARKS_KEPT = 8

Scope = Literal["connection", "node"]


@dataclass(slots=True)
class Flow:
    """Bytes queued to one connection, and how far it confirmed reading."""

    out: int = 0
    acked: int = 0
    marks: dict[int, int] = field(default_factory=dict)
    """mark -> `out` when it was queued."""
    last_mark: int = 0
    """`out` when the last mark was queued."""
    withheld: bool = False

    @property
    def outstanding(self) -> int:
        return self.out - self.acked


class FlowControl:
    def __init__(
        self,
        *,
        per_connection: int = PER_CONNECTION,
        node: int = NODE,
        mark_every: int = MARK_EVERY,
    ) -> None:
        if not 0 < mark_every < per_connection <= node:
            raise ValueError("need 0 < mark_every < per_connection <= node")
        self.per_connection = per_connection
        self.node = node
        self.mark_every = mark_every
        self._cap = per_connection + mark_every  # what one connection counts for, at most
        self.backlog = 0
        """Unconfirmed bytes over all connections."""
        self.node_limited = False
        """The node-wide budget is biting (until the backlog halves)."""

    def refuse_push(
        self, flow: Flow, size: int, *, ahead: int = 0, pending: int = 0
    ) -> Scope | None:
        """Why a push of `size` bytes must not be queued for `flow` (None: it
        may). `ahead`: bytes already set aside for `flow` and not yet
        `queued`; `pending`: such bytes for all connections (a batch being
        gathered), counted as if queued."""
        outstanding = flow.outstanding + ahead
        if outstanding + size > self.per_connection:
            scope: Scope = "connection"
        elif self.backlog + pending + size > self.node and outstanding > self.mark_every:
            scope = "node"
            self.node_limited = True
        else:
            return None
        flow.withheld = True
        return scope

    def room_for(self, flow: Flow, ends: Sequence[int]) -> tuple[int, Scope | None]:
        """How many of a run of pushes may be queued for `flow`, one after
        the other, by `refuse_push`'s rule: `ends` holds each push's end, in
        bytes from the start of the run (ascending). The run is cut at the
        first push refused, so a connection never gets a later push without
        an earlier one. Returns the count and, when the run is cut, the
        scope that cut it (`flow` is then marked withheld)."""
        n = len(ends)
        outstanding = flow.outstanding
        by_connection = bisect_right(ends, self.per_connection - outstanding)
        # The node's budget refuses push i when the backlog with pushes 0..i
        # is over it AND the connection already holds more than a mark with
        # pushes 0..i-1.
        over_node = bisect_right(ends, self.node - self.backlog)
        spare = self.mark_every - outstanding
        over_mark = 0 if spare < 0 else bisect_right(ends, spare) + 1
        by_node = max(over_node, over_mark)
        if by_connection >= n and by_node >= n:
            return n, None
        flow.withheld = True
        if by_connection <= by_node:
            return by_connection, "connection"
        self.node_limited = True
        return by_node, "node"

    def over_budget(self, flow: Flow) -> bool:
        """Whether the connection holds more unread bytes than it may (its
        requests, other than pings, wait until it reads)."""
        return flow.outstanding > self.per_connection

    def _share(self, flow: Flow) -> int:
        """What `flow` counts for in the node-wide backlog: its unconfirmed
        bytes up to its own budget and one mark more. Replies and refusals
        are still queued past that (pushes are not), and a connection that
        reads everything but never confirms must not spend, with them, the
        budget every other connection's pushes share."""
        return min(flow.outstanding, self._cap)

    def _add(self, flow: Flow, size: int) -> None:
        """`size` more bytes queued for `flow` (on every frame sent: kept cheap)."""
        before = flow.out - flow.acked
        flow.out += size
        if before < self._cap:
            self.backlog += min(before + size, self._cap) - before

    def queued(self, flow: Flow, size: int) -> int | None:
        """`size` bytes were queued for `flow`; returns a mark to send next
        (whose own bytes the caller reports with `marked`), or None."""
        self._add(flow, size)
        if flow.out - flow.last_mark < self.mark_every:
            return None
        return secrets.randbelow(2**53 - 1) + 1

    def marked(self, flow: Flow, mark: int, size: int) -> None:
        self._add(flow, size)
        flow.marks[mark] = flow.out
        while len(flow.marks) > MARKS_KEPT:
            del flow.marks[next(iter(flow.marks))]
        flow.last_mark = flow.out

    def read(self, flow: Flow, mark: int) -> bool:
        """The client echoed `mark`. Returns True when it should now be told
        to resync (pushes were withheld and it has read its way back)."""
        at = flow.marks.pop(mark, None)
        if at is None or at <= flow.acked:
            return False
        for old in [m for m, pos in flow.marks.items() if pos <= at]:
            del flow.marks[old]
        before = self._share(flow)
        flow.acked = at
        self.backlog -= before - self._share(flow)
        if self.node_limited and self.backlog < self.node // 2:
            self.node_limited = False
        if flow.withheld and flow.outstanding < self.per_connection // 2:
            flow.withheld = False
            return True
        return False

    def forget(self, flow: Flow) -> None:
        """The connection is gone: its bytes no longer count."""
        self.backlog -= self._share(flow)
        flow.acked = flow.out
