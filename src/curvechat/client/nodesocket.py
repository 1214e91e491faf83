"""One socket to one node, while it lasts: the DEALER (`dealer.open_dealer`),
the task that reads it, the task that watches its monitor, and the requests
in flight on it (`pending.Pending`).

The reader matches replies to their requests by request id, unpacks `batch`
frames, and hands every push (request id 0) on: flow-control marks and
move requests to `on_signal` (the connection acts on them at once), the rest
to `on_push` (the engine). A frame that does not decode is logged. A push
that does not is skipped (a newer node's kind that this client does not
know; a lost push is found as a gap), but a reply or a `batch` (of acks) is
told through `on_invalid`: the requests it answered would wait for an answer
that never comes, and be sent again to the same end. A node that sends past
its flow control (`inflow`) is told through `on_overrun`, and nothing more
of it is read. What its monitor sees end the connection
(closed, refused, a failed handshake) is told through `on_lost`; `close` is
the connection's own decision and tells nobody.

The reader reads the socket to the end, `DRAIN` frames at a time between two
turns of the event loop, without a future per frame: libzmq takes every
frame in, so what the reader leaves there is memory the node decides on.

This module must never decide what a connection does next (retry, move,
back off: `connection` does), interpret a push beyond its type, or outlive
`close`: a closed NodeSocket has failed every request that waited on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import zmq
import zmq.asyncio

from curvechat.client.dealer import LostHandler, stop_monitor, watch_monitor
from curvechat.client.inflow import Inflow
from curvechat.client.pending import Pending
from curvechat.protocol import RemoteProtocolError, decode_server_frame, peek_push_kind
from curvechat.protocol import messages as m

log = logging.getLogger("curvechat.client")

PushHandler = Callable[[m.AnyReply], None]
InvalidHandler = Callable[[RemoteProtocolError], None]
OverrunHandler = Callable[[str], None]

DRAIN: Final = 1024
"""Frames read in one go before the other tasks get a turn."""


class NodeSocket:
    """A DEALER to one node (made by `dealer.open_dealer`, with its monitor),
    read from the moment it is handed here until `close`."""

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        monitor: zmq.asyncio.Socket,
        *,
        on_push: PushHandler,
        on_signal: PushHandler,
        on_lost: LostHandler,
        on_invalid: InvalidHandler,
        on_overrun: OverrunHandler,
    ) -> None:
        self.sock = sock
        self.last_rx = time.monotonic()
        """When a frame last came in (monotonic clock)."""
        self._on_push = on_push
        self._on_signal = on_signal
        self._on_invalid = on_invalid
        self._on_overrun = on_overrun
        self.inflow = Inflow()
        self._cut = False  # the node sent past its flow control: read no more
        self._pending = Pending()
        self._tasks = [
            asyncio.create_task(self._read(), name="reader"),
            asyncio.create_task(watch_monitor(monitor, on_lost), name="monitor"),
        ]

    async def ask(self, req: m.AnyRequest, timeout: float) -> m.AnyReply:
        """Send `req` and wait for its reply (errors as `Pending.ask` raises them)."""
        reply = await self._pending.ask(self.sock, req, timeout)
        if isinstance(req, m.Ping) and req.read_mark and isinstance(reply, m.Pong):
            self.inflow.confirmed(req.read_mark)  # the node noted it before it answered
        return reply

    def submit(self, req: m.AnyRequest, timeout: float) -> asyncio.Future[m.AnyReply]:
        """Send `req` now; the future of its reply."""
        return self._pending.submit(self.sock, req, timeout)

    def submit_sends(
        self, reqs: Sequence[m.Send], timeout: float
    ) -> list[asyncio.Future[m.AnyReply]]:
        """Send `reqs` now, several to a `sends` frame; the futures of their replies."""
        return self._pending.submit_sends(self.sock, reqs, timeout)

    async def close(self, reason: str) -> None:
        """Fail what waits with `reason`, stop the tasks, close the socket."""
        self._pending.fail_all(reason)
        stop_monitor(self.sock)  # while its reader still reads
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.sock.close(linger=0)

    async def _read(self) -> None:
        plain: zmq.Socket[bytes] = zmq.Socket.shadow(self.sock.underlying)  # no future a frame
        while not self._cut:
            self._read_one(await self.sock.recv())
            for _ in range(DRAIN):
                if self._cut:
                    return
                try:
                    data = plain.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._read_one(data)
            else:
                await asyncio.sleep(0)  # more is waiting: the other tasks first
            self.last_rx = time.monotonic()  # once a turn, not once a frame

    def _counted(self, size: int) -> bool:
        """Count a frame that is not a reply to us; False when the node has
        now sent past its flow control (told, and nothing more is read)."""
        if self.inflow.took(size):
            return True
        self._cut = True
        what = self.inflow.overrun()
        log.warning("the server sent past its flow control: %s", what)
        self._on_overrun(what)
        return False

    def _read_one(self, data: bytes) -> None:
        try:
            frame = decode_server_frame(data)
        except RemoteProtocolError as exc:
            if not self._counted(len(data)):
                return
            kind = peek_push_kind(data)
            if kind is None or kind == "batch":
                log.warning("the server sent a frame that cannot be read: %.200r", exc.message)
                self._on_invalid(exc)
            else:
                log.info("skipped a push that cannot be read (%.40r): %.200r", kind, exc.message)
            return
        msg = frame.msg
        if frame.rid != 0:
            if not self._pending.answer(frame.rid, msg):  # not ours: counted
                self._counted(len(data))
            return
        if not self._counted(len(data)):
            return
        if isinstance(msg, m.Mark):
            self.inflow.marked(msg.mark)
            self._on_signal(msg)
        elif isinstance(msg, m.Move):
            self._on_signal(msg)
        elif isinstance(msg, m.Batch):
            for item in msg.items:
                self._deliver(item.rid, item.msg)
        else:
            self._deliver(0, msg)

    def _deliver(self, rid: int, msg: m.AnyReply) -> None:
        """A push (rid 0) to the engine, a reply to the request it answers."""
        if rid != 0:
            self._pending.answer(rid, msg)
            return
        try:
            self._on_push(msg)
        except Exception:
            log.exception("push handler failed")
