"""Requests in flight on one socket, matched with their replies by request id.

What it is for: the connection sends a request with a fresh id and waits for
the reply that carries the same id; the reader hands each reply here. A
socket that goes away fails every request still waiting, with the reason.

It must never open, close or read a socket, nor interpret a reply beyond
turning an `Error` into `ServerRefused`: `nodesocket` owns the socket and
the engine decides what a reply means.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import cast

import zmq
import zmq.asyncio

from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.protocol import LocalProtocolError, encode_request
from curvechat.protocol import messages as m


class Pending:
    """Requests sent and not yet answered, by request id."""

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future[m.AnyReply]] = {}
        self._rids = itertools.count(1)

    async def ask(self, sock: zmq.asyncio.Socket, req: m.AnyRequest, timeout: float) -> m.AnyReply:
        """Send `req` on `sock` and wait for its reply, within `timeout`.

        Raises NotConnected (the socket closed before or while sending),
        RequestTimeout (outcome unknown), ServerRefused (an Error reply)."""
        rid = next(self._rids)
        fut: asyncio.Future[m.AnyReply] = asyncio.get_running_loop().create_future()
        # the caller may have given up (timeout) before the socket closes
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._futures[rid] = fut
        try:
            # One deadline for both: with IMMEDIATE, a send waits until a peer
            # is connected, which for a dead endpoint is never.
            async with asyncio.timeout(timeout):
                try:
                    await sock.send(encode_request(rid, req))
                except (zmq.ZMQError, asyncio.CancelledError) as exc:
                    # pyzmq cancels a pending send when the socket is closed
                    # under it: a lost connection, not a cancellation of us.
                    task = asyncio.current_task()
                    if isinstance(exc, asyncio.CancelledError) and task and task.cancelling():
                        raise
                    raise NotConnected(f"connection closed while sending: {exc!r}") from None
                reply = await asyncio.shield(fut)
        except TimeoutError:
            raise RequestTimeout(f"no reply to {type(req).__name__} in {timeout:.1f} s") from None
        finally:
            self._futures.pop(rid, None)
        return reply

    def submit(
        self, sock: zmq.asyncio.Socket, req: m.AnyRequest, timeout: float
    ) -> asyncio.Future[m.AnyReply]:
        """Send `req` on `sock` now and return the future of its reply,
        without a task of its own (the outbox's pipelined sends). The frame
        is written before this returns, or queued in order behind frames
        still waiting to be written. The future fails as `ask` raises."""
        loop = asyncio.get_running_loop()
        rid = next(self._rids)
        fut: asyncio.Future[m.AnyReply] = loop.create_future()
        self._futures[rid] = fut
        late = RequestTimeout(f"no reply to {type(req).__name__} in {timeout:.1f} s")
        timer = loop.call_later(timeout, _fail, fut, late)

        def finished(_: asyncio.Future[m.AnyReply]) -> None:
            timer.cancel()
            self._futures.pop(rid, None)

        fut.add_done_callback(finished)
        try:
            data = encode_request(rid, req)
        except LocalProtocolError as exc:  # too large to send: this request fails, not the caller
            _fail(fut, exc)
            return fut
        try:
            # pyzmq's asyncio socket answers a send with a Future
            sending = cast("asyncio.Future[object]", sock.send(data))
        except zmq.ZMQError as exc:
            _fail(fut, NotConnected(f"connection closed while sending: {exc!r}"))
            return fut
        if sending.done():
            _sent(fut, sending)
        else:
            sending.add_done_callback(lambda s: _sent(fut, s))
        return fut

    def answer(self, rid: int, reply: m.AnyReply) -> None:
        """The reply to request `rid` came (ignored if no one waits for it);
        an `Error` fails its future with ServerRefused."""
        fut = self._futures.get(rid)
        if fut is None or fut.done():
            return
        if isinstance(reply, m.Error):
            fut.set_exception(ServerRefused(reply.code, reply.message))
        else:
            fut.set_result(reply)

    def fail_all(self, reason: str) -> None:
        """The socket is gone: every request waiting gets NotConnected."""
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(NotConnected(reason))
        self._futures.clear()


def _fail(fut: asyncio.Future[m.AnyReply], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _sent(fut: asyncio.Future[m.AnyReply], sending: asyncio.Future[object]) -> None:
    """pyzmq's send future is done: a send that failed or was cancelled (the
    socket closed under it) fails the request with NotConnected."""
    if sending.cancelled():
        _fail(fut, NotConnected("connection closed while sending"))
    elif (exc := sending.exception()) is not None:
        _fail(fut, NotConnected(f"connection closed while sending: {exc!r}"))
