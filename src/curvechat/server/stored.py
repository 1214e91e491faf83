"""What the node sends back of stored messages: a page of rows cut to a
size, each row as the protocol's `StoredMessage`, and the push of a stored
message again after a duplicate send (`push_stored`).

It must never decide who may read a room (the handlers check that first),
nor push anything the store does not hold at that seq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.protocol import decode_envelope, message_push
from curvechat.protocol import messages as m
from curvechat.store import StoredRow, StoreUnavailable

if TYPE_CHECKING:
    from curvechat.server.context import NodeContext


def stored_message(row: StoredRow) -> m.StoredMessage:
    return m.StoredMessage(seq=row.seq, ts=row.ts_ms, envelope=decode_envelope(row.envelope))


def fit_rows(rows: list[StoredRow], budget: int, *, newest: bool = False) -> list[StoredRow]:
    """The rows that fit in `budget` envelope bytes (at least one): the oldest
    ones, or with `newest` the newest ones (a page read backwards)."""
    order = reversed(rows) if newest else iter(rows)
    kept: list[StoredRow] = []
    for row in order:
        if kept and budget - len(row.envelope) < 0:
            break
        budget -= len(row.envelope)
        kept.append(row)
    return kept[::-1] if newest else kept


async def push_stored(node: NodeContext, at: list[tuple[str, int, bytes, int]]) -> None:
    """Push again the message stored at each (room, seq) of `at`, to every
    connection of its members but the one named (the resend's), if it is
    no longer than the resend's envelope (the last item, in bytes): the
    original of a duplicate send, whose first push may not have gone out (an
    answer lost to a deadline while etcd committed it; the client's resend
    is sealed again, so its bytes differ, but not its size). Never the
    resend's own envelope: it would hand members at that seq what the store
    does not hold there. And not a stored message longer than the resend:
    a resend of a few bytes would make the node push up to 64 KiB, to every
    member's connections. Best effort: what cannot be read is not pushed."""
    for room, seq, skip, resent in at:
        try:
            rows = await node.store.messages(room, after=seq - 1, limit=1)
            view = await node.rooms.get(room)
        except StoreUnavailable:
            return
        if view is None:
            continue
        for row in rows:
            if row.seq == seq and len(row.envelope) <= resent:
                push = message_push(room, seq, row.ts_ms, row.envelope)
                node.metrics.messages_delivered.inc(node.push(view.members(), push, skip=skip))
