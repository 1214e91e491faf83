"""The outbox: every message the user writes is queued on disk first, then
sealed and sent in order by one task, and kept until the server acknowledged
it (a resend after a lost reply carries the same txn id, so the server
stores it once: Idempotent Services).

Which epoch key a message is sealed under is the trust core's decision
(`encryption_key`); when it says to rotate first, the new epoch is made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from curvechat.client import events as ev
from curvechat.client.errors import (
    ClientError,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
)
from curvechat.client.model import CachedMessage, OutboxItem
from curvechat.client.parts import Parts
from curvechat.client.sync import Sync
from curvechat.client.trust import EpochRecord, Rotate
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.errors import CryptoError
from curvechat.protocol import ErrorCode, LocalProtocolError
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_TEXT_CHARS, TEXT_LIMIT

log = logging.getLogger("curvechat.client")

RETRY_LATER = {ErrorCode.STORE_UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL}
STORE_DOWN_FAILOVER = 3  # store_unavailable refusals in a row before trying another node
MAX_UNCOLLECTED = 10_000
"""Acks kept for `wait_ack` before the collected ones are dropped."""


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_txn() -> str:
    return secrets.token_urlsafe(16)


def check_text(text: str) -> None:
    """Refuse, with a code, a text that cannot be a message: before it is
    queued, so before anything is sealed. A text that passes also seals
    (`MAX_TEXT_CHARS` is the whole limit)."""
    if not text.strip():
        raise NotReady("empty message", "empty")
    if len(text) > MAX_TEXT_CHARS:
        raise LocalProtocolError(
            ErrorCode.TOO_LARGE, f"message of {len(text):,} characters; the limit is {TEXT_LIMIT}"
        )
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates (e.g. undecodable input bytes)
        raise LocalProtocolError(ErrorCode.BAD_FRAME, "text is not valid Unicode") from None


class Outbox:
    def __init__(
        self, parts: Parts, sync: Sync, *, rotate_after_messages: int, rotate_after_seconds: float
    ) -> None:
        if rotate_after_messages < 1 or rotate_after_seconds <= 0:
            raise ValueError("rotation limits must be positive")
        self.p = parts
        self.sync = sync
        self.rotate_after_messages = rotate_after_messages
        self.rotate_after_seconds = rotate_after_seconds
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        """Set while the connection is live and synced."""
        self.halted = False
        self._waiters: dict[str, asyncio.Future[m.SendAck]] = {}
        self._store_down = 0  # store_unavailable refusals of sends in a row

    # --- the user's side ----------------------------------------------------------
    def queue(self, room: str, text: str) -> str:
        """Check and queue `text` for `room` on disk; returns its txn id."""
        check_text(text)
        cached = self.p.cache.room(room)
        if cached is None or cached.left:
            raise NotReady(f"you are not a member of {room}", "not_member")
        self.p.core.refuse_if_key_changed(room)
        txn = new_txn()
        if len(self._waiters) > MAX_UNCOLLECTED:
            for old in [t for t, f in self._waiters.items() if f.done()]:
                del self._waiters[old]
        self._waiters[txn] = asyncio.get_running_loop().create_future()
        self.p.cache.enqueue(room, txn, text)
        self.wake.set()
        return txn

    async def wait_ack(self, txn: str, timeout: float | None = None) -> m.SendAck:
        fut = self._waiters.get(txn)
        if fut is None:
            raise NotReady(f"no message {txn} is waiting for an ack", "no_such_message")
        try:
            ack = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise RequestTimeout(
                "not acknowledged yet; the message is queued and will be sent on reconnect"
            ) from None
        except ServerRefused:
            self._waiters.pop(txn, None)
            raise
        self._waiters.pop(txn, None)
        return ack

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return [i for i in self.p.cache.outbox() if room is None or i.room == room]

    def cancel_waiters(self) -> None:
        for fut in self._waiters.values():
            fut.cancel()  # the message stays in the outbox for the next run

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
        for item in self.p.cache.outbox():
            if self.p.core.key_change_in(item.room):
                continue  # held until the user accepts the new key
            try:
                ack = await self.send_one(item)
            except NotConnected:
                break
            except RequestTimeout:
                self._later()  # the outcome is unknown; resending the same txn is safe
                break
            except ServerRefused as exc:
                if exc.code in RETRY_LATER:
                    if exc.code == ErrorCode.STORE_UNAVAILABLE:
                        self._note_store_down()
                    self._later()
                    break
                self._fail(item, exc.code, exc.message)
                continue
            except (ClientError, CryptoError, LocalProtocolError) as exc:
                self._fail(item, getattr(exc, "code", "client_error"), str(exc))
                continue
            self._store_down = 0
            self.p.cache.dequeue(item.txn)
            fut = self._waiters.get(item.txn)
            if fut is not None and not fut.done():
                fut.set_result(ack)  # kept until wait_ack collects it
            self.p.emit(ev.SendAcked(item.room, item.txn, ack.seq, ack.ts))

    def _note_store_down(self) -> None:
        """The node keeps answering store_unavailable (cut off from its store,
        or the store lost quorum): after a few in a row, try another node if
        there is one."""
        self._store_down += 1
        if self._store_down >= STORE_DOWN_FAILOVER and len(self.p.conn.addresses) > 1:
            self._store_down = 0
            self.p.emit(ev.Problem(None, "the node's store is unavailable: trying another node"))
            self.p.conn.drop("store unavailable on this node", failed=True)

    def _fail(self, item: OutboxItem, code: str, message: str) -> None:
        self.p.cache.dequeue(item.txn)
        fut = self._waiters.get(item.txn)
        if fut is not None and not fut.done():
            fut.set_exception(ServerRefused(code, message))
            fut.add_done_callback(_retrieve)
        self.p.emit(ev.SendFailed(item.room, item.txn, code, message))

    async def send_one(self, item: OutboxItem) -> m.SendAck:
        for attempt in range(4):
            epoch = -1
            try:
                async with self.p.lock:
                    current = await self.current_epoch(item.room)
                    epoch = current.epoch
                    env = seal_message(
                        self.p.identity,
                        room=item.room,
                        epoch=epoch,
                        key=current.key,
                        txn=item.txn,
                        plaintext=Plaintext(text=item.text, ts=item.created_ms),
                    )
                ack = await self.p.ask(m.Send(envelope=env), m.SendAck)
            except ServerRefused as exc:
                if exc.code in (ErrorCode.STALE_EPOCH, ErrorCode.CONFLICT) and attempt < 3:
                    # Someone else rotated first, or the server wants a rotation.
                    async with self.p.lock:
                        await self.sync.refresh(item.room)
                        held = self.p.core.held(item.room)
                        if held and max(held) == epoch and exc.code == ErrorCode.STALE_EPOCH:
                            with contextlib.suppress(ServerRefused):
                                await self.rotate(item.room, epoch + 1)
                    continue
                raise
            async with self.p.lock:
                stored = self.p.cache.put_message(
                    item.room,
                    ack.seq,
                    ack.ts,
                    self.p.me,
                    item.txn,
                    item.created_ms,
                    item.text,
                    None,
                    epoch=epoch,
                )
            if stored:  # not if a sync or push brought it in first: report it once
                msg = CachedMessage(
                    item.room,
                    ack.seq,
                    ack.ts,
                    self.p.me,
                    item.txn,
                    item.created_ms,
                    item.text,
                    None,
                )
                self.p.emit(ev.MessageReceived(msg, mine=True, live=True))
            return ack
        raise AssertionError("the last attempt returns or raises")

    # --- epochs -------------------------------------------------------------------------
    async def current_epoch(self, room: str) -> EpochRecord:
        """The epoch key to seal under, rotating first when the trust core
        says so. Lock held."""
        core = self.p.core
        if not core.held(room):
            await self.sync.refresh(room)
        decision = core.encryption_key(
            room,
            now_ms=now_ms(),
            max_messages=self.rotate_after_messages,
            max_age_ms=int(self.rotate_after_seconds * 1000),
        )
        if isinstance(decision, Rotate):
            return await self.rotate(room, decision.epoch)
        return decision

    async def rotate(self, room: str, epoch: int) -> EpochRecord:
        """Make epoch `epoch` of `room` for its current members. Lock held."""
        key, packets = self.p.core.new_epoch(room, epoch)
        await self.p.ask(
            m.NewEpoch(
                room=room,
                epoch=m.EpochUpload(epoch=epoch, after_op=key.after_op, packets=packets),
            ),
            m.RoomChanged,
        )
        self.p.core.own_epoch(key)
        return EpochRecord(epoch=epoch, after_op=key.after_op, key=key.key, sender=self.p.me)
