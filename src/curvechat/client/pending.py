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
import heapq
import itertools
import math
from collections.abc import Sequence
from typing import cast

import zmq
import zmq.asyncio

from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.protocol import (
    ErrorCode,
    LocalProtocolError,
    encode_request,
    encode_send_item,
    encode_sends,
)
from curvechat.protocol import messages as m
from curvechat.protocol.codec import SENDS_OVERHEAD_BYTES
from curvechat.protocol.limits import MAX_FRAME_BYTES, MAX_SENDS

FRAME_REFUSALS = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE, ErrorCode.BAD_VERSION}
)
"""Answers to a send of a `sends` frame that stand for it and every later
send of the frame: to the first, the node refused the frame unread or could
not read it; to a later one, the node refused that one unread (its rate, a
full queue) and read no further."""

SENDS_FRAME_BYTES = 64 * 1024
"""A `sends` frame is filled up to this: a frame arrives whole or not at all,
and each of its sends' deadlines runs while it uploads (64 KiB take 5 s at
100 kbit/s). A send larger than this goes in a frame of its own."""


class Pending:
    """Requests sent and not yet answered, by request id."""

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future[m.AnyReply]] = {}
        self._rids = itertools.count(1)
        # The deadlines of submitted requests, soonest first: (when, rid, what,
        # timeout). One timer for all of them, not one per request; an entry
        # whose request is answered or failed is dropped when it comes to the top.
        self._deadlines: list[tuple[float, int, str, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Each rid of a `sends` frame -> the frame's rids and its place among
        # them: a refusal of one stands for it and the sends after it.
        self._frames: dict[int, tuple[tuple[int, ...], int]] = {}

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
        rid, fut = self._track(req, timeout)
        try:
            data = encode_request(rid, req)
        except LocalProtocolError as exc:  # too large to send: this request fails, not the caller
            self._futures.pop(rid, None)
            _fail(fut, exc)
            return fut
        self._write(sock, data, [fut])
        return fut

    def submit_sends(
        self, sock: zmq.asyncio.Socket, reqs: Sequence[m.Send], timeout: float
    ) -> list[asyncio.Future[m.AnyReply]]:
        """As `submit` for each of `reqs`, in order, several to a `sends`
        frame (for a node whose welcome said it takes them): as many as fit
        one frame, at most MAX_SENDS."""
        futs: list[asyncio.Future[m.AnyReply]] = []
        items: list[bytes] = []
        rids: list[int] = []
        waiting: list[asyncio.Future[m.AnyReply]] = []
        size = 0
        for req in reqs:
            rid, fut = self._track(req, timeout)
            futs.append(fut)
            item = encode_send_item(rid, req)
            if len(item) + SENDS_OVERHEAD_BYTES > MAX_FRAME_BYTES:
                self._futures.pop(rid, None)
                _fail(fut, LocalProtocolError(ErrorCode.TOO_LARGE, f"send of {len(item)} bytes"))
                continue
            if items and (
                len(items) >= MAX_SENDS
                or size + len(item) + SENDS_OVERHEAD_BYTES > SENDS_FRAME_BYTES
            ):
                self._write_sends(sock, items, rids, waiting)
                items, rids, waiting, size = [], [], [], 0
            items.append(item)
            rids.append(rid)
            waiting.append(fut)
            size += len(item)
        if items:
            self._write_sends(sock, items, rids, waiting)
        return futs

    def _write_sends(
        self,
        sock: zmq.asyncio.Socket,
        items: list[bytes],
        rids: list[int],
        futs: list[asyncio.Future[m.AnyReply]],
    ) -> None:
        if len(rids) > 1:
            frame = tuple(rids)
            for place, rid in enumerate(frame):
                self._frames[rid] = (frame, place)
        self._write(sock, encode_sends(rids[0], items), futs)

    def _track(self, req: m.AnyRequest, timeout: float) -> tuple[int, asyncio.Future[m.AnyReply]]:
        """A fresh request id and the future of its reply, failed with
        RequestTimeout after `timeout`."""
        loop = asyncio.get_running_loop()
        rid = next(self._rids)
        fut: asyncio.Future[m.AnyReply] = loop.create_future()
        self._futures[rid] = fut
        when = loop.time() + timeout
        deadlines = self._deadlines
        while deadlines and _finished(self._futures.get(deadlines[0][1])):
            done = heapq.heappop(deadlines)[1]  # answered (or failed) already
            self._futures.pop(done, None)
            self._frames.pop(done, None)
        heapq.heappush(deadlines, (when, rid, type(req).__name__, timeout))
        if when < self._timer_at:
            self._arm(loop, when)
        return rid, fut

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire)
        self._timer_at = when

    def _expire(self) -> None:
        """Fail every submitted request whose deadline has passed."""
        self._timer, self._timer_at = None, math.inf
        loop = asyncio.get_running_loop()
        now, deadlines = loop.time(), self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, rid, what, timeout = heapq.heappop(deadlines)
            self._frames.pop(rid, None)
            fut = self._futures.pop(rid, None)
            if fut is not None:
                _fail(fut, RequestTimeout(f"no reply to {what} in {timeout:.1f} s"))
        if deadlines:
            self._arm(loop, deadlines[0][0])

    @staticmethod
    def _write(
        sock: zmq.asyncio.Socket, data: bytes, futs: list[asyncio.Future[m.AnyReply]]
    ) -> None:
        """Write one frame carrying the requests of `futs`; each fails with
        NotConnected if the frame cannot be written."""
        try:
            # pyzmq's asyncio socket answers a send with a Future
            sending = cast("asyncio.Future[object]", sock.send(data))
        except zmq.ZMQError as exc:
            for fut in futs:
                _fail(fut, NotConnected(f"connection closed while sending: {exc!r}"))
            return
        if sending.done():
            _sent(futs, sending)
        else:
            sending.add_done_callback(lambda s: _sent(futs, s))

    def answer(self, rid: int, reply: m.AnyReply) -> bool:
        """The reply to request `rid` came; an `Error` fails its future with
        ServerRefused. False when no one waits for it (it is ignored)."""
        where = self._frames.pop(rid, None)
        if where and isinstance(reply, m.Error) and reply.code in FRAME_REFUSALS:
            # The node read no further in the `sends` frame (or could not read
            # it): the answer stands for each of its sends from this one on.
            frame, place = where
            for other in frame[place + 1 :]:
                self._frames.pop(other, None)
                _fail(self._futures.pop(other, None), ServerRefused(reply.code, reply.message))
        fut = self._futures.pop(rid, None)
        if fut is None or fut.done():
            return False
        if isinstance(reply, m.Error):
            fut.set_exception(ServerRefused(reply.code, reply.message))
        else:
            fut.set_result(reply)
        return True

    def fail_all(self, reason: str) -> None:
        """The socket is gone: every request waiting gets NotConnected."""
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(NotConnected(reason))
        self._futures.clear()
        self._frames.clear()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf


def _finished(fut: asyncio.Future[m.AnyReply] | None) -> bool:
    return fut is None or fut.done()


def _fail(fut: asyncio.Future[m.AnyReply] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


def _sent(futs: list[asyncio.Future[m.AnyReply]], sending: asyncio.Future[object]) -> None:
    """pyzmq's send future is done: a send that failed or was cancelled (the
    socket closed under it) fails the requests of its frame with NotConnected."""
    if sending.cancelled():
        why = "connection closed while sending"
    elif (err := sending.exception()) is not None:
        why = f"connection closed while sending: {err!r}"
    else:
        return
    for fut in futs:
        _fail(fut, NotConnected(why))
