"""Requests in flight on one socket, matched with their replies by request id.

What it is for: the connection sends a request with a fresh id and waits for
the reply that carries the same id; the reader hands each reply here. A
socket that goes away fails every request still waiting, with the reason.

It must never open, close or read a socket, nor interpret a reply beyond
turning an `Error` into `ServerRefused`: `connection` owns the socket and
the engine decides what a reply means.
"""

from __future__ import annotations

import asyncio
import itertools

import zmq
import zmq.asyncio

from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.protocol import encode_request
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
        if isinstance(reply, m.Error):
            raise ServerRefused(reply.code, reply.message)
        return reply

    def answer(self, rid: int, reply: m.AnyReply) -> None:
        """The reply to request `rid` came (ignored if no one waits for it)."""
        fut = self._futures.get(rid)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def fail_all(self, reason: str) -> None:
        """The socket is gone: every request waiting gets NotConnected."""
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(NotConnected(reason))
        self._futures.clear()
