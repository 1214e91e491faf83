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
(`encryption_grant`); the sealing turns, and the new epochs it asks for,
are `sealing.py`'s. This module must never choose a key or a recipient
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
from collections import deque

from curvechat.client import events as ev
from curvechat.client.acks import AckWaiters, retrieve
from curvechat.client.cache import CacheRefusals
from curvechat.client.errors import (
    CacheWriteFailed,
    ClientError,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
)
from curvechat.client.model import CachedMessage, OutboxItem
from curvechat.client.parts import Parts, expect
from curvechat.client.sealing import SEAL_BATCH, InFlight, Sealer
from curvechat.client.sending import (
    BAD_ACK,
    RANK,
    StaleRefusals,
    TxnIds,
    Verdict,
    check_text,
    classify,
)
from curvechat.client.sync import Sync
from curvechat.client.trust import EpochRecord
from curvechat.crypto.errors import CryptoError
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m

log = logging.getLogger("curvechat.client")

STORE_DOWN_FAILOVER = 3  # passes in a row with store_unavailable refusals: try another node
WINDOW = 128
STORE_FULL_TEXT = (
    "the server's disk is nearly full (store_full): your messages wait in the outbox"
    " and go out once it has room again"
)
"""Sends in flight at most (the node takes up to 256 of one connection)."""
STALE_TRIES = 3
"""A send refused as stale this many times more, with no newer epoch to be
learned, fails."""


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
        self.sealer = Sealer(
            parts,
            sync,
            rotate_after_messages=rotate_after_messages,
            rotate_after_seconds=rotate_after_seconds,
            window=window,
        )
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        """Set while the connection is live and synced."""
        self.halted = False
        self._waiters = AckWaiters()
        self._store_down = 0  # passes in a row with sends refused store_unavailable
        self._refusals = CacheRefusals(self._tell_cache_refused)
        self._down_noted = False  # this pass counted in `_store_down` already
        self.held: str | None = None  # why sends wait, as the node said (store_full)
        self._stale = StaleRefusals(STALE_TRIES)
        self._unopened: dict[str, int] = {}  # txn -> acks at a row that did not open, so far
        self._txns: dict[str, TxnIds] = {}  # room -> its ids (none tells of another room)
        self._texts: dict[str, str] = {}  # txn -> text, of what this outbox queued and holds

    @property
    def window(self) -> int:
        return self.sealer.window

    @property
    def rotate_after_messages(self) -> int:
        return self.sealer.rotate_after_messages

    @rotate_after_messages.setter
    def rotate_after_messages(self, n: int) -> None:
        self.sealer.rotate_after_messages = n

    @property
    def rotate_after_seconds(self) -> float:
        return self.sealer.rotate_after_seconds

    # --- the user's side ----------------------------------------------------------
    def queue(self, room: str, text: str) -> str:
        """Check and queue `text` for `room` on disk; returns its txn id."""
        return self.queue_many(room, [text])[0]

    def queue_many(self, room: str, texts: list[str]) -> list[str]:
        """Queue several texts for `room` with one durable commit; their txn
        ids. A cache that refuses it (a full disk, or held too long by
        another process of this home) is CacheWriteFailed: nothing queued."""
        for text in texts:
            check_text(text)
        try:
            cached = self.p.cache.room(room)
            if cached is None:  # the CLI says it before, with its own hint
                raise NotReady(f"no room {room} here: you are not a member of it", "no_such_room")
            if cached.left:
                raise NotReady(f"you are no longer a member of {room}", "not_member")
            self.p.core.refuse_if_key_changed(room)
            ids = self._txns.setdefault(room, TxnIds())
            txns = [ids() for _ in texts]
            self.p.cache.enqueue_many(room, txns, texts)
        except sqlite3.Error as exc:
            raise CacheWriteFailed(f"not queued: the local cache refused the write: {exc}") from exc
        self._waiters.expect(room, txns)
        self._texts.update(zip(txns, texts, strict=True))
        self.wake.set()
        return txns

    def expect(self, items: list[OutboxItem]) -> None:
        """Have `wait_ack` answer for `items` too (queued by an earlier process)."""
        rooms: dict[str, list[str]] = {}
        for item in items:
            rooms.setdefault(item.room, []).append(item.txn)
        for room, txns in rooms.items():
            self._waiters.expect(room, txns)

    async def wait_ack(self, txn: str, timeout: float | None = None) -> m.SendAck:
        return await self._waiters.wait(txn, timeout)

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return [i for i in self.p.cache.outbox(self._texts) if room is None or i.room == room]

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
            except sqlite3.Error as exc:
                log.warning("the outbox waits: the local cache: %s", exc)
                self._refusals.refused(exc)
                self._later()
            except Exception:
                # A bug must not stop the outbox for good: log, retry shortly.
                log.exception("outbox flush failed")
                self._later()
            else:
                self._refusals.passed()

    def _tell_cache_refused(self, exc: sqlite3.Error) -> None:
        """A full disk or an I/O error keeps even sends the server stored
        pending here; what is queued stays queued."""
        why = f"the local cache refuses writes ({exc}): messages stay pending meanwhile"
        self.p.emit(ev.Problem(None, why))

    def _later(self) -> None:
        asyncio.get_running_loop().call_later(1.0, self.wake.set)

    async def flush(self) -> None:
        """Send what the outbox holds, in order, with up to `window` sends in
        flight, until it is empty or a pass has to stop (no connection, retry
        later); a pass stopped by a stale epoch goes round again at once."""
        while await self._pass():
            pass

    def _begin_pass(self) -> None:
        self.sealer.begin_pass()
        self._down_noted = False

    async def _pass(self) -> bool:
        flight: deque[InFlight] = deque()
        try:
            return await self._sends(flight)
        finally:
            for sent in flight:  # torn down with sends unanswered: nobody takes those
                sent.task.add_done_callback(retrieve)

    async def _sends(self, flight: deque[InFlight]) -> bool:
        """One pass over the outbox, its sends in flight in `flight`."""
        self._begin_pass()
        items = self.p.cache.outbox(self._texts)
        if len(self._texts) > len(items):  # another process of this home sent some
            held = {i.txn for i in items}
            gone = [t for t in self._texts if t not in held]
            self._waiters.answer_stored(gone, self.p.cache, self.p.me)
            self._texts = {t: x for t, x in self._texts.items() if t in held}
        blocked = {r for r in {i.room for i in items} if self.p.core.key_change_in(r)}
        todo = deque(i for i in items if i.room not in blocked)
        stop: Verdict | None = None
        stale: dict[str, tuple[OutboxItem, int, BaseException]] = {}
        barrier = False  # the epoch changed: send no more until the window is empty
        while True:
            while stop is None and todo and len(flight) < self.window and not barrier:
                n = min(SEAL_BATCH, self.window - len(flight))
                failed = await self.sealer.seal(todo, n, flight)
                if isinstance(failed, OutboxItem):
                    barrier = True
                elif failed is not None:
                    stop = self._judge(stop, stale, failed[0], -1, failed[1], None)
            if not flight:
                if barrier and stop is None:
                    barrier = False
                    continue
                break
            # The oldest send, then every later one already answered: one commit.
            await asyncio.wait([flight[0].task])
            acked: list[tuple[InFlight, m.SendAck]] = []
            while flight and flight[0].task.done():
                sent = flight.popleft()
                self.sealer.landed(sent)
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
        code = exc.code if isinstance(exc, ServerRefused) else None
        if code == ErrorCode.STORE_UNAVAILABLE and not self._down_noted:
            self._down_noted = True  # one failed commit answers many sends
            self._note_store_down()
        if code == ErrorCode.STORE_FULL and self.held is None:
            self.held = STORE_FULL_TEXT  # told once, until a send is acked again
            self.p.emit(ev.Problem(None, STORE_FULL_TEXT))
        return verdict if stop is None or RANK[verdict] > RANK[stop] else stop

    async def _after_stale(self, item: OutboxItem, epoch: int, exc: BaseException) -> bool:
        """Someone else rotated first, or the server wants a rotation: bring
        the room up to date (its log, its keys, and if that changes nothing,
        the room's epoch as the server has it), rotating if the trust core
        says so (`rotate_on_refusal`: the epoch to seal under is still the
        refused one, and at most once per state of the room's log unless the
        log itself calls for one). What a refusal counts against the item is
        `StaleRefusals`' to say. False if the pass should not go round again."""
        assert isinstance(exc, ServerRefused)
        core = self.p.core
        before = core.current(item.room)
        # (-1: a rotation was refused, under the epoch held before.)
        refused = max(epoch, -1 if before is None else before)
        try:
            async with self.p.lock:
                await self.sync.refresh(item.room)
                if core.current(item.room) == refused:
                    await self.sync.relist()  # the room's epoch, as the server has it
                learned, give_up = self._stale.refused(item.txn, refused, core.current(item.room))
                if (
                    not learned
                    and exc.code == ErrorCode.STALE_EPOCH
                    and core.rotate_on_refusal(item.room, epoch)
                ):
                    with contextlib.suppress(ServerRefused):
                        await self.p.rotate(item.room, core.next_epoch(item.room))
        except NotConnected:
            return False
        except (RequestTimeout, ServerRefused):
            self._later()
            return False
        except (ClientError, CryptoError) as err:  # the room's log no longer verifies
            self._fail(item, getattr(err, "code", "client_error"), str(err))
            return True
        if give_up:
            self._fail(item, exc.code, exc.message)
        return True

    def _acked(self, acked: list[tuple[InFlight, m.SendAck]]) -> None:
        """Acknowledged sends, in order: out of the outbox and into the cache
        in one transaction per room; each told once."""
        shown: list[CachedMessage] = []
        bad: dict[str, str] = {}  # txn -> why its ack cannot be true
        waiting: set[str] = set()
        for room, group in itertools.groupby(acked, key=lambda pair: pair[0].item.room):
            rows = [(sent.item, ack, sent.epoch) for sent, ack in group]
            stored, refused, unopened = self.p.cache.record_sent(room, self.p.me, rows)
            shown += stored
            bad.update((item.txn, why) for item, why in refused)
            waiting.update(item.txn for item in unopened)
        self._store_down = 0
        self.held = None
        if waiting:  # their rows open once this process has the key: sent again then
            self._later()
        for sent, ack in acked:
            txn = sent.item.txn
            if txn in waiting:
                tries = self._unopened[txn] = self._unopened.get(txn, 0) + 1
                if tries <= STALE_TRIES:
                    continue
                bad[txn] = f"the server acknowledged it as message {ack.seq}, which does not open"
            if txn in bad:
                self._fail(sent.item, BAD_ACK, bad[txn])
                continue
            self._unopened.pop(txn, None)
            self._stale.done(txn)
            self._waiters.acked(txn, ack)
            self._texts.pop(txn, None)
            self.p.emit(ev.SendAcked(sent.item.room, sent.item.txn, ack.seq, ack.ts))
        ours: dict[str, list[CachedMessage]] = {sent.item.room: [] for sent, _ in acked}
        for msg in shown:
            ours[msg.room].append(msg)
        for room, msgs in ours.items():
            # What another process of this home stored first: below ours, then
            # among or past them (our own sends its pushes brought in, too).
            if msgs:
                # In seq order, whatever order the acks came in: the rows told
                # before ours are those below the lowest.
                msgs.sort(key=lambda msg: msg.seq)
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
        self._texts.pop(item.txn, None)
        self._stale.done(item.txn)
        self._unopened.pop(item.txn, None)
        self._waiters.failed(item.txn, code, message)
        self.p.emit(ev.SendFailed(item.room, item.txn, code, message))

    # --- epochs -------------------------------------------------------------------------
    async def current_epoch(self, room: str) -> EpochRecord:
        """The epoch key to seal under, rotating first when the trust core
        says so. Lock held."""
        return await self.sealer.current_epoch(room)
