"""The outbox: every message the user writes is queued on disk first, then
sealed and sent in order by one task, and kept until the server acknowledged
it (a resend after a lost reply carries the same txn id, so the server
stores it once: Idempotent Services).

Sends are pipelined: up to `window` are in flight on the connection, and
their answers are taken in the order sent. Each send names the one sent
before it in the pass for its room (`after`), and the node stores it only
once that one is stored (else `out_of_order`): so whatever a refusal, a
lost connection or a restarted node leaves stored is a prefix of the
window, never a later message without an earlier one; the rest stays
queued and is resent, in order, with the same txn ids. What a send's
answer means is decided without I/O (`sending.py`).

Which epoch key a message is sealed under is the trust core's decision
(`encryption_key`); when it says to rotate first, the new epoch is made here.
This module must never choose a key or a recipient itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass

from curvechat.client import events as ev
from curvechat.client.acks import AckWaiters, retrieve
from curvechat.client.errors import (
    ClientError,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
)
from curvechat.client.model import CachedMessage, OutboxItem
from curvechat.client.parts import Parts, expect
from curvechat.client.sending import BAD_ACK, RANK, Verdict, check_text, classify, new_txn
from curvechat.client.sync import Sync
from curvechat.client.trust import EpochRecord, Grant, Rotate
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.errors import CryptoError
from curvechat.protocol import ErrorCode, LocalProtocolError
from curvechat.protocol import messages as m

log = logging.getLogger("curvechat.client")

STORE_DOWN_FAILOVER = 3  # passes in a row with store_unavailable refusals: try another node
WINDOW = 128
"""Sends in flight at most (the node takes up to 256 of one connection)."""
SEAL_BATCH = 32
"""Messages sealed per turn of the lock (pushes are handled between turns)."""
STALE_TRIES = 3
"""A send refused as stale this many times more, with no newer epoch to be
learned, fails."""


@dataclass(slots=True)
class _InFlight:
    item: OutboxItem
    epoch: int
    after: str | None  # the txn sent before it in this pass, for its room
    task: asyncio.Future[m.AnyReply]


def now_ms() -> int:
    return int(time.time() * 1000)


class Outbox:
    def __init__(
        self,
        parts: Parts,
        sync: Sync,
        *,
        rotate_after_messages: int,
        rotate_after_seconds: float,
        window: int = WINDOW,
    ) -> None:
        if rotate_after_messages < 1 or rotate_after_seconds <= 0:
            raise ValueError("rotation limits must be positive")
        if not 1 <= window <= 256:
            raise ValueError("the send window is 1 to 256")
        self.p = parts
        self.sync = sync
        self.rotate_after_messages = rotate_after_messages
        self.rotate_after_seconds = rotate_after_seconds
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        """Set while the connection is live and synced."""
        self.halted = False
        self._waiters = AckWaiters()
        self._store_down = 0  # passes in a row with sends refused store_unavailable
        self._down_noted = False  # this pass counted in `_store_down` already
        self.window = window
        self._in_flight: Counter[tuple[str, int]] = Counter()
        """Sends in flight per (room, epoch): they count toward the epoch's use."""
        self._stale: dict[str, int] = {}  # txn -> stale refusals so far
        self._last_sent: dict[str, str] = {}  # room -> txn sent last in this pass

    # --- the user's side ----------------------------------------------------------
    def queue(self, room: str, text: str) -> str:
        """Check and queue `text` for `room` on disk; returns its txn id."""
        return self.queue_many(room, [text])[0]

    def queue_many(self, room: str, texts: list[str]) -> list[str]:
        """Queue several texts for `room` with one durable commit; their txn ids."""
        for text in texts:
            check_text(text)
        cached = self.p.cache.room(room)
        if cached is None or cached.left:
            raise NotReady(f"you are not a member of {room}", "not_member")
        self.p.core.refuse_if_key_changed(room)
        txns = [new_txn() for _ in texts]
        self._waiters.expect(txns)
        self.p.cache.enqueue_many(room, txns, texts)
        self.wake.set()
        return txns

    async def wait_ack(self, txn: str, timeout: float | None = None) -> m.SendAck:
        return await self._waiters.wait(txn, timeout)

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return [i for i in self.p.cache.outbox() if room is None or i.room == room]

    def cancel_waiters(self) -> None:
        self._waiters.cancel()

    # --- the sending task -----------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.ready.is_set() or self.halted:
                continue
            try:
                await self.flush()
            except Exception:
                # A bug must not stop the outbox for good: log, retry shortly.
                log.exception("outbox flush failed")
                self._later()

    def _later(self) -> None:
        asyncio.get_running_loop().call_later(1.0, self.wake.set)

    async def flush(self) -> None:
        """Send what the outbox holds, in order, with up to `window` sends in
        flight, until it is empty or a pass has to stop (no connection, retry
        later); a pass stopped by a stale epoch goes round again at once."""
        while await self._pass():
            pass

    def _begin_pass(self) -> None:
        self._in_flight = Counter()  # a pass ends with its window empty (or was torn down)
        self._last_sent = {}  # what an earlier pass sent is stored or back in the outbox
        self._down_noted = False

    async def _pass(self) -> bool:
        self._begin_pass()
        items = self.p.cache.outbox()
        blocked = {r for r in {i.room for i in items} if self.p.core.key_change_in(r)}
        todo = deque(i for i in items if i.room not in blocked)
        flight: deque[_InFlight] = deque()
        stop: Verdict | None = None
        stale: dict[str, tuple[OutboxItem, int, BaseException]] = {}
        barrier = False  # the epoch changed: send no more until the window is empty
        while True:
            while stop is None and todo and len(flight) < self.window and not barrier:
                n = min(SEAL_BATCH, self.window - len(flight), len(todo))
                take = [todo.popleft() for _ in range(n)]
                sealed, failed = await self._seal(take, flight)
                if isinstance(failed, OutboxItem):
                    todo.extendleft(reversed(take[sealed:]))
                    barrier = True
                elif failed is not None:
                    todo.extendleft(reversed(take[sealed + 1 :]))
                    stop = self._judge(stop, stale, failed[0], -1, failed[1], None)
            if not flight:
                if barrier and stop is None:
                    barrier = False
                    continue
                break
            # The oldest send, then every later one already answered: one commit.
            await asyncio.wait([flight[0].task])
            acked: list[tuple[_InFlight, m.SendAck]] = []
            while flight and flight[0].task.done():
                sent = flight.popleft()
                self._in_flight[(sent.item.room, sent.epoch)] -= 1
                done = sent.task
                exc = NotConnected("cancelled") if done.cancelled() else done.exception()
                if exc is None:
                    try:
                        acked.append((sent, expect(done.result(), m.SendAck)))
                    except ServerRefused as refused:
                        exc = refused
                if exc is not None:
                    stop = self._judge(stop, stale, sent.item, sent.epoch, exc, sent.after)
            if acked:
                self._acked(acked)
        if stop is Verdict.LATER:
            self._later()
        if stop is Verdict.AGAIN:
            return True  # from the first one not stored, in order
        if stop is not Verdict.STALE:
            return False
        again = False
        for item, epoch, exc in stale.values():
            again = await self._after_stale(item, epoch, exc) or again
        return again

    def _judge(
        self,
        stop: Verdict | None,
        stale: dict[str, tuple[OutboxItem, int, BaseException]],
        item: OutboxItem,
        epoch: int,
        exc: BaseException,
        after: str | None,
    ) -> Verdict | None:
        """Act on a send that was not acked; returns why the pass stops (the
        gravest reason so far), None if it goes on."""
        verdict = classify(exc, after=after)
        if verdict is Verdict.FAIL:
            self._fail(item, getattr(exc, "code", "client_error"), str(exc))
            return stop
        if verdict is Verdict.STALE:
            stale.setdefault(item.room, (item, epoch, exc))
        store_down = isinstance(exc, ServerRefused) and exc.code == ErrorCode.STORE_UNAVAILABLE
        if store_down and not self._down_noted:  # one failed commit answers many sends
            self._down_noted = True
            self._note_store_down()
        return verdict if stop is None or RANK[verdict] > RANK[stop] else stop

    async def _after_stale(self, item: OutboxItem, epoch: int, exc: BaseException) -> bool:
        """Someone else rotated first, or the server wants a rotation: bring
        the room up to date, rotating if we hold no newer epoch than the one
        refused. A refusal that taught us no newer epoch counts against the
        item, which fails after STALE_TRIES of them (a server that never lets
        it through); one explained by another member's rotation does not.
        False if the pass should not go round again."""
        assert isinstance(exc, ServerRefused)
        core = self.p.core
        before = max(core.held(item.room), default=-1)
        try:
            async with self.p.lock:
                await self.sync.refresh(item.room)
                held = core.held(item.room)
                learned = max(held, default=-1) > max(before, epoch)
                rotate = held and max(held) == epoch and exc.code == ErrorCode.STALE_EPOCH
                if rotate and not learned:
                    with contextlib.suppress(ServerRefused):
                        await self.p.rotate(item.room, epoch + 1)
        except NotConnected:
            return False
        except (RequestTimeout, ServerRefused):
            self._later()
            return False
        except (ClientError, CryptoError) as err:  # the room's log no longer verifies
            self._fail(item, getattr(err, "code", "client_error"), str(err))
            return True
        if learned:
            self._stale.pop(item.txn, None)
            return True
        tries = self._stale[item.txn] = self._stale.get(item.txn, 0) + 1
        if tries > STALE_TRIES:
            self._fail(item, exc.code, exc.message)
        return True

    async def _seal(
        self, items: list[OutboxItem], flight: deque[_InFlight]
    ) -> tuple[int, tuple[OutboxItem, Exception] | OutboxItem | None]:
        """Seal `items` in order under the lock, each under the key the trust
        core gives (rotating first where it says so), and send them. Returns
        how many were sent, and why it stopped short: the item that cannot be
        sealed with its error, or the item whose epoch differs from that of
        sends still in flight for its room. (Were it sent, a send still in
        flight under the old epoch could be refused as stale and resent after
        it: out of order.)

        The sealed sends are written together, at the end of the turn or
        before a rotation is asked for (the node then takes them in one
        batch, and commits them before the new epoch)."""
        grants: dict[str, Grant] = {}  # room -> the key, and how many it may still seal
        sealed: list[tuple[OutboxItem, int, str | None, m.Send]] = []
        n = 0  # of `items`, sealed (and sent at the latest when this returns)
        try:
            async with self.p.lock:
                for item in items:
                    try:
                        grant = grants.get(item.room)
                        if grant is None or grant.left <= 0:
                            self._write(sealed, flight)
                            # It may wait: what another room was granted is asked again
                            # (a pin or key change can come meanwhile, lock or not).
                            grants.clear()
                            grant = grants[item.room] = await self._grant(item.room)
                            if any(
                                r == item.room and e != grant.record.epoch
                                for (r, e), count in self._in_flight.items()
                                if count
                            ):
                                return n, item
                        current = grant.record
                        env = seal_message(
                            self.p.identity,
                            room=item.room,
                            epoch=current.epoch,
                            key=current.key,
                            txn=item.txn,
                            plaintext=Plaintext(text=item.text, ts=item.created_ms),
                        )
                    except (ClientError, CryptoError, LocalProtocolError) as exc:
                        return n, (item, exc)
                    self._in_flight[(item.room, current.epoch)] += 1  # in flight from now on
                    grants[item.room] = Grant(current, grant.left - 1)
                    # Named so that the node stores it only after the one sent before
                    # it: a refusal of that one (rate limit, store hiccup) can then
                    # never leave this one stored ahead of it.
                    after = self._last_sent.get(item.room)
                    self._last_sent[item.room] = item.txn
                    sealed.append((item, current.epoch, after, m.Send(envelope=env, after=after)))
                    n += 1
                return n, None
        finally:
            self._write(sealed, flight)

    def _write(
        self, sealed: list[tuple[OutboxItem, int, str | None, m.Send]], flight: deque[_InFlight]
    ) -> None:
        """Send the sealed sends, in order, into the window (and empty `sealed`)."""
        tasks = self.p.conn.submit_sends([send for _, _, _, send in sealed])
        for (item, epoch, after, _), task in zip(sealed, tasks, strict=True):
            task.add_done_callback(retrieve)
            flight.append(_InFlight(item, epoch, after, task))
        sealed.clear()

    def _acked(self, acked: list[tuple[_InFlight, m.SendAck]]) -> None:
        """Acknowledged sends, in order: out of the outbox and into the cache
        in one transaction per room; each told once."""
        shown: list[CachedMessage] = []
        bad: dict[str, str] = {}  # txn -> why its ack cannot be true
        for room, group in itertools.groupby(acked, key=lambda pair: pair[0].item.room):
            rows = [(sent.item, ack, sent.epoch) for sent, ack in group]
            stored, refused = self.p.cache.record_sent(room, self.p.me, rows)
            shown += stored
            bad.update((item.txn, why) for item, why in refused)
        self._store_down = 0
        for sent, ack in acked:
            if sent.item.txn in bad:
                self._fail(sent.item, BAD_ACK, bad[sent.item.txn])
                continue
            self._stale.pop(sent.item.txn, None)
            self._waiters.acked(sent.item.txn, ack)
            self.p.emit(ev.SendAcked(sent.item.room, sent.item.txn, ack.seq, ack.ts))
        ours: dict[str, list[CachedMessage]] = {sent.item.room: [] for sent, _ in acked}
        for msg in shown:
            ours[msg.room].append(msg)
        for room, msgs in ours.items():
            # What another process of this home stored first: below ours, then
            # among or past them (our own sends its pushes brought in, too).
            if msgs:
                self.p.tell_stored_now(room, msgs[0].seq - 1, live=True)
            for msg in msgs:
                self.p.emit(ev.MessageReceived(msg, mine=True, live=True))
            self.p.tell_stored_now(room, live=True)

    def _note_store_down(self) -> None:
        """The node keeps answering store_unavailable (cut off from its store,
        or the store lost quorum): after a few passes in a row, try another
        node if there is one."""
        self._store_down += 1
        if self._store_down >= STORE_DOWN_FAILOVER and len(self.p.conn.addresses) > 1:
            self._store_down = 0
            self.p.emit(ev.Problem(None, "the node's store is unavailable: trying another node"))
            self.p.conn.drop("store unavailable on this node", failed=True)

    def _fail(self, item: OutboxItem, code: str, message: str) -> None:
        self.p.cache.dequeue(item.txn)
        self._stale.pop(item.txn, None)
        self._waiters.failed(item.txn, code, message)
        self.p.emit(ev.SendFailed(item.room, item.txn, code, message))

    # --- epochs -------------------------------------------------------------------------
    async def current_epoch(self, room: str) -> EpochRecord:
        """The epoch key to seal under, rotating first when the trust core
        says so. Lock held."""
        return (await self._grant(room)).record

    async def _grant(self, room: str) -> Grant:
        """The epoch key to seal under and how many more messages it may
        seal (the sends in flight under it counted as used), rotating first
        when the trust core says so. Lock held: the grant holds while it is."""
        core = self.p.core
        if not core.held(room):
            await self.sync.refresh(room)
        held = core.held(room)
        in_flight = self._in_flight[(room, max(held))] if held else 0
        decision = core.encryption_grant(
            room,
            now_ms=now_ms(),
            max_messages=self.rotate_after_messages - in_flight,
            max_age_ms=int(self.rotate_after_seconds * 1000),
        )
        if isinstance(decision, Rotate):
            record = await self.p.rotate(room, decision.epoch)
            return Grant(record, self.rotate_after_messages)
        return decision
