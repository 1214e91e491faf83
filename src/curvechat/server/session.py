"""One client connection's state, and the ordered path that serves the
requests the reactor does not answer itself.

A connection's requests are served in the order they came. The reactor
answers pings at once, and commits plain sends in batches of its own while
nothing else of the connection is waiting; everything else (and everything
behind it) waits in the session's `pending` queue and is served here, one
request after another. Sends on this path are pipelined: the next request
starts as soon as a send's commit is queued in the store (which commits its
queue in order), so one connection's sends share group commits; any other
request first waits until the connection's sends in flight are answered.

This module must never touch the socket: replies go through the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from curvechat.protocol import ErrorCode, RemoteProtocolError, encode_reply
from curvechat.protocol import messages as m
from curvechat.server.flow import Flow
from curvechat.server.handlers import Refusal
from curvechat.server.ratelimit import TokenBucket
from curvechat.store import StoreUnavailable

if TYPE_CHECKING:
    from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

SESSION_QUEUE_MAX = 256  # requests waiting per connection; sends in flight per connection
UNREGISTERED_OK = (m.Hello, m.Register, m.Ping, m.Bye)
UNREAD = "this connection has not read what the node sent it; read it first"
"""Why a request is refused while its connection is over its flow budget."""

# A request waiting for the ordered path: the decoded frame (or why it did
# not decode), its size in bytes, when it arrived (perf_counter), its rid.
Queued = tuple["m.ClientFrame | RemoteProtocolError", int, float, int]


@dataclass(slots=True)
class Session:
    """One client connection (one ROUTER routing id). Kept small: an idle
    connection costs what is here plus libzmq's share."""

    routing_id: bytes
    transport_key: str  # z85 CURVE key, from ZAP's User-Id
    user: str | None = None
    resolved: bool = False
    connected_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    last_seen: float = field(default_factory=time.monotonic)
    client: str = ""
    batch: bool = False  # its hello said it reads `batch` frames
    pending: deque[Queued] | None = None  # waiting for the ordered path (made when needed)
    bucket: TokenBucket | None = None
    worker: asyncio.Task[None] | None = None
    sends: set[asyncio.Future[None]] = field(default_factory=set)  # in flight, not yet acked
    inflight: int = 0  # the reactor's batched sends of this connection not yet answered
    # For operators (the dashboard's connection table), not for serving:
    fd: int = -1  # the connection's socket, to match the monitor's disconnect events
    request_t0: float = 0.0  # perf_counter when the request being served arrived
    last_ping_ms: int | None = None
    rtt_ms: float | None = None  # as the client last reported it
    reconnects: int = 0  # as the client last reported it
    pinged: bool = False  # it has reported its reconnect count at least once
    reconnect_noted_ms: int = 0  # when a reconnect it reported was last made an event
    outbox: int = 0  # messages waiting in the client's outbox, as it last reported
    gone: str | None = None  # why the connection ended: disconnected, timeout, left (clean exit)
    gone_ms: int | None = None
    dropped_ms: int | None = None  # when the node forgot it
    first_here: bool = True  # no other connection with this key since the node started
    flow: Flow = field(default_factory=Flow)  # bytes queued to it, and confirmed read
    queued_bytes: int = 0  # request bytes received and not yet served
    refused_run: int = 0  # frames refused in a row (rate, bytes in flight): `reactor.FLOOD_CUT`

    @property
    def busy(self) -> bool:
        """Whether requests of this connection wait on the ordered path (a
        new one must then wait behind them)."""
        return bool(self.pending) or (self.worker is not None and not self.worker.done())

    def waiting(self) -> int:
        return len(self.pending) if self.pending else 0


class OrderedPath:
    """Serves a connection's queued requests in order (see the module doc)."""

    def __init__(self, node: ChatNode) -> None:
        self.node = node
        self.active: dict[int, Session] = {}
        """Sessions with a queue being served, by id (what the queue-depth gauge sums)."""

    def enqueue(self, sess: Session, item: Queued) -> bool:
        """Queue a request; False if the connection has too many waiting."""
        if sess.pending is None:
            sess.pending = deque()
        if len(sess.pending) >= SESSION_QUEUE_MAX:
            return False
        sess.pending.append(item)
        sess.queued_bytes += item[1]
        if sess.worker is None or sess.worker.done():
            self.active[id(sess)] = sess
            sess.worker = asyncio.create_task(self._work(sess))
            sess.worker.add_done_callback(lambda t: self._idle(sess, t))
        return True

    def _idle(self, sess: Session, worker: asyncio.Task[None]) -> None:
        if sess.worker is worker:  # not a later worker's session
            self.active.pop(id(sess), None)
            sess.worker = None  # an idle connection keeps no finished task

    async def _work(self, sess: Session) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        pending = sess.pending
        while pending:
            frame, size, t0, rid = pending.popleft()
            sess.queued_bytes -= size
            if isinstance(frame, RemoteProtocolError):
                node.metrics.requests.labels("invalid", frame.code).inc()
                node.reply(sess, rid, m.Error(code=frame.code, message=frame.message[:500]))
                continue
            if not isinstance(frame.req, m.Send):
                if sess.sends:
                    await asyncio.wait(set(sess.sends))
                await self._guarded(sess, frame, t0)
                continue
            if len(sess.sends) >= SESSION_QUEUE_MAX:
                await asyncio.wait(set(sess.sends), return_when=asyncio.FIRST_COMPLETED)
            # Resolved by the send handler once the commit is queued in the
            # store (or here, when the send ends before that): then the
            # connection's next request may start.
            queued: asyncio.Future[None] = loop.create_future()
            task = asyncio.create_task(self._guarded(sess, frame, t0, queued))
            sess.sends.add(task)
            task.add_done_callback(sess.sends.discard)
            await queued
        sess.pending = None  # an idle connection keeps no queue

    async def _guarded(
        self,
        sess: Session,
        frame: m.ClientFrame,
        t0: float,
        queued: asyncio.Future[None] | None = None,
    ) -> None:
        try:
            await self._serve(sess, frame, t0, queued)
        except Exception:
            # _serve answers every error it knows; this is a bug, and one
            # bad frame must not stop the connection's other requests.
            log.exception("unexpected failure serving a frame")
            self.node.reply(
                sess, frame.rid, m.Error(code=ErrorCode.INTERNAL, message="internal server error")
            )
        finally:
            if queued is not None and not queued.done():
                queued.set_result(None)  # refused or failed before its commit

    async def _serve(
        self,
        sess: Session,
        frame: m.ClientFrame,
        t0: float,
        queued: asyncio.Future[None] | None = None,
    ) -> None:
        node = self.node
        req = frame.req
        kind = type(req).__struct_config__.tag
        try:
            if not sess.resolved and kind != "bye":  # (leaving needs no admission)
                try:
                    sess.user = await node.user_for(sess.transport_key)
                except StoreUnavailable as exc:
                    raise Refusal(ErrorCode.STORE_UNAVAILABLE, f"store unavailable: {exc}") from exc
                sess.resolved = True
                if sess.user is not None:
                    node.admit(sess, sess.user)
            if sess.user is None and not isinstance(req, UNREGISTERED_OK):
                raise Refusal(
                    ErrorCode.NOT_REGISTERED, "this key is not registered; register first"
                )
            if node.flow.over_budget(sess.flow) and not isinstance(req, m.Ping | m.Bye):
                raise Refusal(ErrorCode.RATE_LIMITED, UNREAD)
            sess.request_t0 = t0
            reply = await node.handlers.dispatch(sess, req, queued)
            code = "ok"
        except Refusal as exc:
            reply = m.Error(code=exc.code, message=exc.message[:500])
            code = exc.code
        except Exception:
            log.exception("internal error serving %s", kind)
            reply = m.Error(code=ErrorCode.INTERNAL, message="internal server error")
            code = ErrorCode.INTERNAL
        node.metrics.observe_request(str(kind), code)
        node.send(sess.routing_id, encode_reply(frame.rid, reply))
        if isinstance(req, m.Send) and code == "ok":
            node.metrics.send_ack_seconds.observe(time.perf_counter() - t0)
