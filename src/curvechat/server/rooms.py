"""The server's in-memory view of each room: the verified membership state
replayed from the store, and the room's record (head, epoch).

The store is the truth; this cache is reloaded whenever a compare-and-swap in
the store fails, so a node never acts on a view older than its last conflict.
A reload reads the room's record and applies only the ops past the cached
head, so its cost does not grow with the log; only a room's first load
replays the whole log, in a thread when it is long. A user refused at one
version of a room is refused again without a reload until the room changes.

This module must never let a request's cost depend on the length of a log it
has already verified.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from curvechat.crypto.membership import MemberState, epoch_is_stale
from curvechat.crypto.membership_rules import apply_op
from curvechat.protocol import decode_member_op
from curvechat.protocol.messages import SignedOp
from curvechat.store import RoomRecord, Store


@dataclass
class RoomView:
    record: RoomRecord
    state: MemberState
    last_departure: int = -1
    """Index of the latest remove/leave op; an epoch older than it is stale."""
    adders: dict[str, str] = field(default_factory=dict)
    """Each member -> the actor of the op that last added them (who may
    share the room's history with them: `share_keys`)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refused: set[str] = field(default_factory=set)
    """Users refused as non-members at this version of the room."""

    @property
    def epoch_is_stale(self) -> bool:
        return epoch_is_stale(self.last_departure, self.record.epoch_after_op)

    def members(self) -> list[str]:
        return list(self.state.members)


REFUSED_KEPT = 10_000  # refused users remembered per room version
ROOMS_KEPT = 4_096  # rooms whose views are kept, the least recently asked for go first
REPLAY_IN_THREAD = 64  # ops to verify above which the work leaves the event loop


def not_older(a: RoomRecord, b: RoomRecord) -> bool:
    """Whether record `a` is at least as far on as `b` in everything that
    only grows: the message head, the epoch and the membership log."""
    return a.head >= b.head and a.epoch >= b.epoch and a.op_head >= b.op_head


def _log_facts(
    ops: Sequence[SignedOp], last: int = -1, adders: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """(index of the latest remove or leave, member -> who last added them)
    after `ops`, from those of the log before them."""
    adders = dict(adders or {})
    for signed in ops:
        op = decode_member_op(signed.op)
        if op.kind in ("remove", "leave"):
            last = op.index
        note_adder(adders, op.kind, op.actor, op.target)
    return last, adders


def note_adder(adders: dict[str, str], kind: str, actor: str, target: str) -> None:
    """What an op of `kind` does to `RoomView.adders`."""
    if kind in ("create", "add"):
        adders[target] = actor
    elif kind in ("remove", "leave"):
        adders.pop(target, None)


def _extend(state: MemberState, ops: Sequence[SignedOp]) -> MemberState:
    """`state` after `ops`, in one copy of its members (`MemberState.apply`
    copies them at each op: a first load of a log of n adds cost n^2)."""
    members, index, head = state.members, state.index, state.head
    for signed in ops:
        op, head = apply_op(state.room, index, head, members, signed)
        index = op.index
    return MemberState(state.room, index, head, members)


class RoomCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._rooms: dict[str, RoomView] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        """Each room's lock while anything holds it (a view kept here, or one
        a request still works on after this cache let it go): a view read
        again takes the same lock, so changes to a room stay one at a time."""

    async def get(self, room: str) -> RoomView | None:
        view = self._rooms.get(room)
        if view is None:
            return await self.reload(room)
        self._keep(view)
        return view

    def _keep(self, view: RoomView) -> None:
        """Cache `view` as its room's newest, and let the least recently
        asked-for rooms go past ROOMS_KEPT (a user creating rooms by the
        thousand grew the node by 1.7 KiB each, for good). A room let go is
        read from the store again when asked for: the store, whose compares
        fence every change, is the truth, not this cache."""
        rooms = self._rooms
        rooms.pop(view.record.room, None)
        rooms[view.record.room] = view
        self._locks.setdefault(view.record.room, view.lock)
        while len(rooms) > ROOMS_KEPT:
            del rooms[next(iter(rooms))]

    async def reload(self, room: str) -> RoomView | None:
        """The room as the store has it now, from the cached view plus the ops
        past its head (the whole log only on a first load). A view put while
        this one was read (a handler's, after its own commit) that is no older
        than what was read is kept: a read made before a change must not put
        the room back before it (the next rotation refused as a `conflict`)."""
        record = await self._store.room(room)
        if record is None:
            self._rooms.pop(room, None)
            return None
        old = self._rooms.get(room)
        if old is not None and old.state.index == old.record.op_head:
            if not_older(old.record, record):
                return old  # the view cached meanwhile (or before) is as far on
            if (record.op_head, record.epoch) == (old.record.op_head, old.record.epoch):
                old.record = record  # only the message head moved: same view, same refusals
                return old
        if old is not None and record.op_head > old.state.index:
            base, last, adders = old.state, old.last_departure, old.adders
            ops = [SignedOp(op=r.op, sig=r.sig) for r in await self._store.ops(room, base.index)]
        else:
            base, last, adders = MemberState.empty(room), -1, {}
            ops = [SignedOp(op=r.op, sig=r.sig) for r in await self._store.ops(room)]
        if len(ops) > REPLAY_IN_THREAD:
            state = await asyncio.to_thread(_extend, base, ops)
        else:
            state = _extend(base, ops)
        last, adders = _log_facts(ops, last, adders)
        now = self._rooms.get(room)
        if now is not None and now is not old and not_older(now.record, record):
            return now
        lock = old.lock if old is not None else self._locks.get(room)
        if lock is None:
            lock = self._locks[room] = asyncio.Lock()
        view = RoomView(record=record, state=state, last_departure=last, adders=adders, lock=lock)
        self._keep(view)
        return view

    @staticmethod
    def refuse(view: RoomView, user: str) -> None:
        """Remember that `user` is not a member at this version of the room."""
        if len(view.refused) >= REFUSED_KEPT:
            view.refused.clear()
        view.refused.add(user)

    def put(self, view: RoomView) -> None:
        self._keep(view)

    def peek(self, room: str) -> RoomView | None:
        """The cached view, without loading it."""
        return self._rooms.get(room)

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)
