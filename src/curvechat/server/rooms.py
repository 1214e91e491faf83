"""The server's in-memory view of each room: the verified membership state
replayed from the store, and the room's record (head, epoch).

The store is the truth; this cache is reloaded whenever a compare-and-swap in
the store fails, so a node never acts on a view older than its last conflict.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from curvechat.crypto.membership import MemberState, epoch_is_stale, replay
from curvechat.protocol import decode_member_op
from curvechat.protocol.messages import SignedOp
from curvechat.store import RoomRecord, Store


@dataclass
class RoomView:
    record: RoomRecord
    state: MemberState
    last_departure: int = -1
    """Index of the latest remove/leave op; an epoch older than it is stale."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def epoch_is_stale(self) -> bool:
        return epoch_is_stale(self.last_departure, self.record.epoch_after_op)

    def members(self) -> list[str]:
        return list(self.state.members)


def _last_departure(ops: list[SignedOp]) -> int:
    last = -1
    for signed in ops:
        op = decode_member_op(signed.op)
        if op.kind in ("remove", "leave"):
            last = op.index
    return last


class RoomCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._rooms: dict[str, RoomView] = {}

    async def get(self, room: str) -> RoomView | None:
        view = self._rooms.get(room)
        if view is None:
            view = await self.reload(room)
        return view

    async def reload(self, room: str) -> RoomView | None:
        record = await self._store.room(room)
        if record is None:
            self._rooms.pop(room, None)
            return None
        records = await self._store.ops(room)
        ops = [SignedOp(op=r.op, sig=r.sig) for r in records]
        old = self._rooms.get(room)
        view = RoomView(record=record, state=replay(room, ops), last_departure=_last_departure(ops))
        if old is not None:
            view.lock = old.lock
        self._rooms[room] = view
        return view

    def put(self, view: RoomView) -> None:
        self._rooms[view.record.room] = view

    def peek(self, room: str) -> RoomView | None:
        """The cached view, without loading it."""
        return self._rooms.get(room)

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)
