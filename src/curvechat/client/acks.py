"""Who waits for which send's answer: one future per queued txn, resolved
with its ack or its refusal, kept until `wait` collects it.

It must never send, seal or touch the outbox's queue: the outbox tells it
what became of each txn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from curvechat.client.errors import NotReady, RequestTimeout, ServerRefused
from curvechat.protocol import messages as m

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

    def awaited(self, txn: str) -> str | None:
        """The room of `txn` if its answer is still to come."""
        return self._rooms.get(txn)

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
