"""Who waits for which send's answer: one future per queued txn, resolved
with its ack or its refusal, kept until `wait` collects it.

It must never send, seal or touch the outbox's queue: the outbox tells it
what became of each txn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from curvechat.client.errors import NotReady, RequestTimeout, ServerRefused
from curvechat.protocol import messages as m

if TYPE_CHECKING:
    from curvechat.client.cache import Cache

MAX_UNCOLLECTED = 10_000
"""Answers kept for `wait` before the collected ones are dropped."""


def retrieve(fut: asyncio.Future[Any]) -> None:
    """A done-callback that marks a future's exception as seen."""
    if not fut.cancelled():
        fut.exception()


class AckWaiters:
    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[m.SendAck]] = {}
        self._rooms: dict[str, str] = {}  # txn -> its room, while awaited

    def expect(self, room: str, txns: list[str]) -> None:
        """Answers for `txns` of `room` will come (call when they are queued)."""
        if len(self._futures) > MAX_UNCOLLECTED:
            for old in [t for t, f in self._futures.items() if f.done()]:
                del self._futures[old]
        loop = asyncio.get_running_loop()
        for txn in txns:
            if txn not in self._futures:  # one already awaited keeps its answer
                self._futures[txn] = loop.create_future()
                self._rooms[txn] = room

    async def wait(self, txn: str, timeout: float | None = None) -> m.SendAck:
        fut = self._futures.get(txn)
        if fut is None:
            raise NotReady(f"no message {txn} is waiting for an ack", "no_such_message")
        try:
            async with asyncio.timeout(timeout):
                ack = await asyncio.shield(fut)
        except TimeoutError:
            raise RequestTimeout(
                "not acknowledged yet; the message is queued and will be sent on reconnect"
            ) from None
        except ServerRefused:
            self._futures.pop(txn, None)
            raise
        self._futures.pop(txn, None)
        return ack

    def answer_stored(self, txns: Iterable[str], cache: Cache, me: str) -> None:
        """Sends queued here that another process of this home took out of the
        outbox: one still awaited is answered from the message that process
        stored (it was acked there), not left to time out as queued."""
        for txn in txns:
            room = self._rooms.get(txn)
            if room is None:
                continue
            seq = cache.seen_txn(room, me, txn)
            if seq is None:
                continue  # not stored: failed there (told there), or gone with the room
            stored = cache.messages_at(room, [seq])
            ts = stored[0].ts_ms if stored else 0
            self.acked(txn, m.SendAck(room=room, txn=txn, seq=seq, ts=ts))

    def acked(self, txn: str, ack: m.SendAck) -> None:
        self._rooms.pop(txn, None)
        fut = self._futures.get(txn)
        if fut is not None and not fut.done():
            fut.set_result(ack)  # kept until `wait` collects it

    def failed(self, txn: str, code: str, message: str) -> None:
        self._rooms.pop(txn, None)
        fut = self._futures.get(txn)
        if fut is not None and not fut.done():
            fut.set_exception(ServerRefused(code, message))
            fut.add_done_callback(retrieve)

    def cancel(self) -> None:
        self._rooms.clear()
        for fut in self._futures.values():
            fut.cancel()  # the message stays in the outbox for the next run
