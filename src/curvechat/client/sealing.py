"""The outbox's sealing turns: queued messages sealed in order under the key
the trust core grants, and written into the send window.

A rotation the core asks for does not drain the window. The `new_epoch`
goes out right behind the old epoch's sends: the node serves a
connection's other requests only once its sends in flight are answered
(server/session.py), so it takes the new epoch after them. While that
answer is on its way, the next messages of the room are sealed under the
new key and held back. They are written once the node took the epoch and
acked every earlier send of the room; if it refused the epoch or any of
those sends, they are dropped unsent, and sealed again in a later turn.
So nothing is sent under a new epoch while a send under the old one may
still be refused and resent after it, and nothing is sent under a key
the node did not take.

It must never choose a key or a recipient itself (the trust core's), read
or write the cache's outbox rows, or take a send's answer (the outbox's).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from curvechat.client.errors import ClientError
from curvechat.client.model import OutboxItem
from curvechat.client.parts import Parts
from curvechat.client.sync import Sync
from curvechat.client.trust import EpochRecord, Grant, Rotate
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.errors import CryptoError
from curvechat.crypto.roomkeys import EpochKey
from curvechat.protocol import LocalProtocolError
from curvechat.protocol import messages as m

SEAL_BATCH = 32
"""Messages sealed per turn of the lock (pushes are handled between turns)."""

Stop = tuple[OutboxItem, Exception] | OutboxItem | None
"""Why a turn stopped short: the item that cannot be sealed (taken off the
queue) with its error; the item that must wait until the room's window is
empty (left at the head of the queue); None: it did not stop short."""


@dataclass(slots=True)
class InFlight:
    item: OutboxItem
    epoch: int
    after: str | None  # the txn sent before it in this pass, for its room
    task: asyncio.Future[m.AnyReply]


@dataclass(slots=True)
class _Sealed:
    item: OutboxItem
    epoch: int
    env: m.Envelope


@dataclass(slots=True)
class _Making:
    """An epoch on its way to the node, and what was sealed under it meanwhile."""

    key: EpochKey
    answer: asyncio.Future[m.AnyReply]
    grant: Grant
    held: list[_Sealed] = field(default_factory=list)


def now_ms() -> int:
    return int(time.time() * 1000)


def _acked(sent: InFlight) -> bool:
    task = sent.task
    return (
        task.done()
        and not task.cancelled()
        and task.exception() is None
        and isinstance(task.result(), m.SendAck)
    )


class Sealer:
    def __init__(
        self,
        parts: Parts,
        sync: Sync,
        *,
        rotate_after_messages: int,
        rotate_after_seconds: float,
        window: int,
    ) -> None:
        self.p = parts
        self.sync = sync
        self.rotate_after_messages = rotate_after_messages
        self.rotate_after_seconds = rotate_after_seconds
        self.window = window
        self.in_flight: Counter[tuple[str, int]] = Counter()
        """Sends in flight per (room, epoch): they count toward the epoch's use."""
        self.last_sent: dict[str, str] = {}  # room -> txn sent last in this pass

    def begin_pass(self) -> None:
        self.in_flight = Counter()  # a pass ends with its window empty (or was torn down)
        self.last_sent = {}  # what an earlier pass sent is stored or back in the outbox

    def landed(self, sent: InFlight) -> None:
        """`sent` was answered (or will never be)."""
        self.in_flight[(sent.item.room, sent.epoch)] -= 1

    async def seal(self, todo: deque[OutboxItem], limit: int, flight: deque[InFlight]) -> Stop:
        """Seal up to `limit` items from the head of `todo`, in order, under
        the lock, each under the key the trust core gives, and send them.

        An item whose epoch differs from that of sends still in flight for
        its room waits (were it sent, a send still in flight under the old
        epoch could be refused as stale and resent after it: out of order),
        unless the epoch is one this turn is making: see the module doc.

        The sealed sends are written together, at the end of the turn or
        before a rotation is asked for (the node then takes them in one
        batch, and commits them before the new epoch)."""
        grants: dict[str, Grant] = {}  # room -> the key, and how many it may still seal
        sealed: list[_Sealed] = []
        making: _Making | None = None
        stop: Stop = None
        try:
            async with self.p.lock:
                while todo and stop is None:
                    item = todo[0]
                    if making is None and limit <= 0:
                        break
                    if making is not None and not await self._ahead(making, item, grants):
                        break
                    try:
                        grant = grants.get(item.room)
                        if grant is None or grant.left <= 0:
                            self._write(sealed, flight)
                            # It may wait: what another room was granted is asked again
                            # (a pin or key change can come meanwhile, lock or not).
                            grants.clear()
                            got = await self._grant(item.room, ahead=True)
                            if isinstance(got, _Making):
                                making, grant = got, got.grant
                            else:
                                grant = got
                                if self._other_epoch_in_flight(item.room, grant.record.epoch):
                                    return item
                            grants[item.room] = grant
                        record = grant.record
                        env = seal_message(
                            self.p.identity,
                            room=item.room,
                            epoch=record.epoch,
                            key=record.key,
                            txn=item.txn,
                            plaintext=Plaintext(text=item.text, ts=item.created_ms),
                        )
                    except (ClientError, CryptoError, LocalProtocolError) as exc:
                        todo.popleft()
                        stop = (item, exc)
                        break
                    todo.popleft()
                    grants[item.room] = Grant(record, grant.left - 1)
                    if making is not None:
                        making.held.append(_Sealed(item, record.epoch, env))
                    else:
                        sealed.append(_Sealed(item, record.epoch, env))
                        limit -= 1
                if making is not None:  # (`sealed` went out before it was asked for)
                    return await self._settle(making, todo, flight, stop)
                return stop
        finally:
            self._write(sealed, flight)

    async def _ahead(self, making: _Making, item: OutboxItem, grants: dict[str, Grant]) -> bool:
        """Whether to seal `item` too while the epoch is on its way: of the
        same room, within the epoch's count and the window, and not once
        the node answered (a batch at a time, letting the answers in)."""
        held = len(making.held)
        if item.room != making.key.room or grants[item.room].left <= 0 or held >= self.window:
            return False
        if held % SEAL_BATCH == 0:
            await asyncio.sleep(0)
        return not making.answer.done()

    async def _settle(
        self, making: _Making, todo: deque[OutboxItem], flight: deque[InFlight], stop: Stop
    ) -> Stop:
        """Wait for the node's answer to the epoch being made; send what was
        sealed under it if the node took it and acked every earlier send of
        the room, else put it back, unsent, at the head of `todo`."""
        room = making.key.room
        # What was sealed under it, and the one that then failed to seal (it
        # came after them): back at the head of `todo` in that order if unsent.
        back = [s.item for s in making.held] + ([stop[0]] if isinstance(stop, tuple) else [])
        try:
            reply = await making.answer
            if not isinstance(reply, m.RoomChanged):
                raise ClientError(f"expected RoomChanged, got {type(reply).__name__}")
        except (ClientError, LocalProtocolError) as exc:  # e.g. too_large: a huge room
            todo.extendleft(reversed(back))
            return (todo.popleft(), exc) if todo else stop
        self.p.rotated(making.key)
        earlier = [s for s in flight if s.item.room == room]
        if not all(_acked(s) for s in earlier) or not self._still_granted(making):
            # A refusal to resend first, a node that did not answer them
            # first, or the room's log, keys or pins changed meanwhile: the
            # window drains, and these are sealed again.
            todo.extendleft(reversed(back))
            return todo[0] if todo else None
        self._write(making.held, flight)
        return stop

    def _still_granted(self, making: _Making) -> bool:
        """Whether the trust core still grants the epoch being made for as
        many messages as were sealed under it (answers were let in while
        they were sealed)."""
        try:
            grant = self.p.core.encryption_grant(
                making.key.room,
                now_ms=now_ms(),
                max_messages=self.rotate_after_messages,
                max_age_ms=int(self.rotate_after_seconds * 1000),
            )
        except (ClientError, CryptoError):
            return False
        return (
            isinstance(grant, Grant)
            and grant.record.epoch == making.key.epoch
            and grant.left >= len(making.held)
        )

    def _other_epoch_in_flight(self, room: str, epoch: int) -> bool:
        return any(r == room and e != epoch for (r, e), count in self.in_flight.items() if count)

    def _write(self, sealed: list[_Sealed], flight: deque[InFlight]) -> None:
        """Send the sealed sends, in order, into the window (and empty `sealed`).
        Each names the one sent before it for its room, so that the node
        stores it only after that one: a refusal of that one (rate limit,
        store hiccup) can then never leave this one stored ahead of it."""
        if not sealed:
            return
        afters: list[str | None] = []
        for s in sealed:
            afters.append(self.last_sent.get(s.item.room))
            self.last_sent[s.item.room] = s.item.txn
            self.in_flight[(s.item.room, s.epoch)] += 1  # in flight from now on
        sends = [m.Send(envelope=s.env, after=a) for s, a in zip(sealed, afters, strict=True)]
        tasks = self.p.conn.submit_sends(sends)
        # (An answer is taken from each task by the outbox's pass, or marked
        # as seen when the pass ends without it: `Outbox._pass`.)
        for s, after, task in zip(sealed, afters, tasks, strict=True):
            flight.append(InFlight(s.item, s.epoch, after, task))
        sealed.clear()

    # --- epochs -------------------------------------------------------------------------
    async def current_epoch(self, room: str) -> EpochRecord:
        """The epoch key to seal under, rotating first when the trust core
        says so. Lock held."""
        got = await self._grant(room, ahead=False)
        assert isinstance(got, Grant)
        return got.record

    async def _grant(self, room: str, *, ahead: bool) -> Grant | _Making:
        """The epoch key to seal under and how many more messages it may
        seal (the sends in flight under it counted as used), rotating first
        when the trust core says so: with `ahead` and sends of the room in
        flight, the new epoch is only asked for (see the module doc). Lock
        held: the grant holds while it is."""
        core = self.p.core
        if core.current(room) is None:
            await self.sync.refresh(room)
        current = core.current(room)
        in_flight = self.in_flight[(room, current)] if current is not None else 0
        decision = core.encryption_grant(
            room,
            now_ms=now_ms(),
            max_messages=self.rotate_after_messages - in_flight,
            max_age_ms=int(self.rotate_after_seconds * 1000),
        )
        if not isinstance(decision, Rotate):
            return decision
        if ahead and any(r == room and n for (r, _), n in self.in_flight.items()):
            key, answer = self.p.begin_rotation(room, decision.epoch)
            record = EpochRecord(
                epoch=key.epoch, after_op=key.after_op, key=key.key, sender=self.p.me
            )
            return _Making(key, answer, Grant(record, self.rotate_after_messages))
        record = await self.p.rotate(room, decision.epoch)
        return Grant(record, self.rotate_after_messages)
