"""The node's hot path: one plain (non-asyncio) ROUTER socket, read in
batches, written without waiting.

When the socket's FD says it may be readable, the reactor receives until
the socket would block (at most BATCH_MAX frames, then it comes back on the
next loop turn) and handles the batch in one pass:

* pings are answered at once, also while the connection's other requests
  wait on the store; a `hello` from a connection whose user is known and
  that has nothing waiting is answered at once too;
* the sends of a `sends` request are taken one by one, as if each had come
  in a frame of its own (a `sends` frame refused unread, or that does not
  decode, is answered once, to its rid: the client fails all its sends);
* a plain send from a connection with nothing waiting, into a room whose
  cached view admits it, joins the batch's commit: one store call for the
  whole batch (the store's group commit), one task, and when it returns the
  acks and pushes of every message go out in commit order, each client's
  in as few frames as they fit in (sendbatch.py, fanout.py);
* everything else goes to the connection's ordered path (session.py), and
  so does everything behind it, so each connection is still served in the
  order it sent.

ZeroMQ's FD is edge-triggered and any send may consume its edge, so every
send and every batch cut short schedules one more drain on the next loop turn
(at most one at a time), which receives until EAGAIN again.

This module must never block on a peer (every send is non-blocking: a frame
for a full or vanished peer is dropped and counted), never create a task or
future per frame, and never decide an access rule on its own: a send it is
not sure about goes to the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import zmq

from curvechat.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    RemoteProtocolError,
    decode_request,
    encode_reply,
    peek_request_id,
)
from curvechat.protocol import messages as m
from curvechat.server.sendbatch import PlainSend, SendBatches
from curvechat.server.session import UNREAD, Session

if TYPE_CHECKING:
    from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

BATCH_MAX = 2048  # frames handled in one pass before the loop runs anything else
FLOOD_CUT = 1000
"""Frames of one connection refused in a row (its rate, or its bytes in
flight) that shut the connection down. An honest client waits for its
answers and backs off when refused, so it meets a few refusals in a row,
not a thousand; one that does not wait could otherwise keep the reactor
answering it, and, since the socket takes every frame in
(curvechat/heartbeats.py), libzmq queueing what it sends, for as long as
it kept sending faster than the reactor reads."""
BATCH_BYTES_MAX = 512 * 1024  # and their bytes: a `sends` frame carries up to 256 requests
SEND_FIELDS_BYTES = 512  # a send's bytes beyond its ciphertext, at most
REQUEST_BYTES_MAX = 2 * 1024 * 1024  # request bytes waiting to be served, per connection
# Flags as plain ints: combining pyzmq's flag enums costs more than the send.
_NOWAIT = int(zmq.NOBLOCK)
_MORE_NOWAIT = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_EHOSTUNREACH = int(zmq.EHOSTUNREACH)
FAILURE_LOG_EVERY_S = 10.0  # a frame whose handling raised: one traceback this often at most
INTERNAL_ERROR = m.Error(code=ErrorCode.INTERNAL, message="internal server error")


class Reactor:
    def __init__(self, node: ChatNode, sock: zmq.Socket[bytes]) -> None:
        self.node = node
        self.sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._scheduled = False
        self.batches = SendBatches(node, self.send)
        metrics = node.metrics
        requests = metrics.requests
        # Label children bound once: counting is one call per batch.
        self._n_ping = requests.labels("ping", "ok")
        self._n_hello = requests.labels("hello", "ok")
        self._n_limited = requests.labels("?", ErrorCode.RATE_LIMITED)
        self._n_failed = requests.labels("?", ErrorCode.INTERNAL)
        self._dropped = metrics.pushes_dropped
        self._failure_logged = -FAILURE_LOG_EVERY_S  # when a failed frame was last logged

    # --- readiness -----------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = self.sock.FD
        self._loop.add_reader(self._fd, self._drain)
        self._kick()  # frames may have come before the reader was armed

    def stop(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        self._fd = -1

    def _kick(self) -> None:
        """Drain once more on the next loop turn (the FD may not say so)."""
        if not self._scheduled and self._loop is not None and self._fd >= 0:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._fd < 0:
            return
        batch: list[list[zmq.Frame]] = []
        recv = self.sock.recv_multipart
        size = 0
        try:
            while len(batch) < BATCH_MAX and size < BATCH_BYTES_MAX:
                frames = recv(_NOWAIT, copy=False)
                batch.append(frames)
                size += len(frames[-1])
            self._kick()  # cut short: the rest next turn
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:  # closing: the FD says when to look again
            log.warning("receive failed: %s", exc)
        if batch:
            try:
                self._handle(batch)
            except Exception:
                log.exception("unexpected failure handling a batch")

    # --- one pass over a batch ---------------------------------------------
    def _handle(self, batch: list[list[zmq.Frame]]) -> None:
        node = self.node
        now = time.monotonic()
        t0 = time.perf_counter()
        sends: list[PlainSend] = []
        pings = hellos = limited = 0
        for frames in batch:
            # One frame that breaks something unforeseen costs that frame
            # only, not the rest of the pass (other users' frames among them).
            try:
                if len(frames) != 2:
                    if len(frames) > 2:
                        self.send(
                            frames[0].bytes,
                            encode_reply(
                                0,
                                m.Error(
                                    code=ErrorCode.BAD_FRAME,
                                    message=f"expected one frame, got {len(frames) - 1}",
                                ),
                            ),
                        )
                    continue
                payload = frames[1]
                try:
                    key = payload.get("User-Id")
                except zmq.ZMQError:
                    continue  # no ZAP identity: never serve it
                sess = node.session_for(frames[0].bytes, str(key), payload)
                sess.last_seen = now
                data = payload.bytes
                refusal = node.rate_limited(sess, now, len(data))
                if refusal is None and sess.queued_bytes + len(data) > REQUEST_BYTES_MAX:
                    refusal = "too many request bytes in flight on this connection"
                if refusal is not None:
                    limited += 1
                    sess.refused_run += 1
                    if sess.refused_run >= FLOOD_CUT:
                        # It does not wait for its answers: cut, and what it
                        # sent before the cut is read and dropped unanswered.
                        if sess.refused_run == FLOOD_CUT:
                            node.liveness.cut(sess)
                        continue
                    # One answer, to the frame's rid (a `sends` frame's first item's):
                    # the client takes it for every send of the frame.
                    node.reply(
                        sess,
                        peek_request_id(data),
                        m.Error(code=ErrorCode.RATE_LIMITED, message=refusal),
                    )
                    continue
                sess.refused_run = 0
                try:
                    frame: m.ClientFrame | RemoteProtocolError = decode_request(data)
                except RemoteProtocolError as exc:
                    frame = exc
                if isinstance(frame, RemoteProtocolError):
                    rid = peek_request_id(data)
                    if sess.busy:  # answered in its turn
                        self._enqueue(sess, (frame, len(data), t0, rid))
                    else:
                        node.metrics.requests.labels("invalid", frame.code).inc()
                        node.reply(sess, rid, m.Error(code=frame.code, message=frame.message[:500]))
                    continue
                req = frame.req
                kind = type(req)
                if kind is m.Sends:
                    limited += self._sends(sess, frame.rid, req, now, t0, sends)  # type: ignore[arg-type]
                    continue
                if kind is m.Ping:
                    pings += 1
                    self._pong(sess, frame.rid, req)  # type: ignore[arg-type]
                    continue
                if not sess.busy:
                    if kind is m.Send:
                        item = self.batches.batchable(sess, frame.rid, req, t0)  # type: ignore[arg-type]
                        if item is not None:
                            sends.append(item)
                            continue
                    elif (
                        kind is m.Hello
                        and sess.resolved
                        and not node.draining  # its refusal is the handler's
                        and not node.store_cut_off  # as is this one
                        and not node.flow.over_budget(sess.flow)
                    ):
                        hellos += 1
                        node.reply(sess, frame.rid, node.welcome(sess, req))  # type: ignore[arg-type]
                        continue
                self._enqueue(sess, (frame, len(data), t0, frame.rid))
            except Exception:
                self._n_failed.inc()
                if now - self._failure_logged >= FAILURE_LOG_EVERY_S:  # a bug, not a flood
                    self._failure_logged = now
                    log.exception("unexpected failure handling a frame")
                with contextlib.suppress(Exception):
                    rid = peek_request_id(frames[-1].bytes)
                    self.send_frame(frames[0].bytes, encode_reply(rid, INTERNAL_ERROR))
        if sends:
            self.batches.commit(sends)
        if pings:
            self._n_ping.inc(pings)
        if hellos:
            self._n_hello.inc(hellos)
        if limited:
            self._n_limited.inc(limited)

    def _sends(
        self, sess: Session, rid: int, req: m.Sends, now: float, t0: float, sends: list[PlainSend]
    ) -> int:
        """Each send of a `sends` request, in order, as if it had come in a
        frame of its own: rate-limited one by one (the frame paid for the
        first), batched while the connection has nothing waiting, else queued
        on its ordered path. The first one refused unread (rate, a full
        queue) is answered and the rest of the frame with it: one answer,
        which the client takes for that send and every later one of the
        frame (a frame of many sends never costs many refusals). Returns the
        refusals to count here (a full queue's is counted by `_enqueue`)."""
        node = self.node
        if node.flow.over_budget(sess.flow):  # refused by the ordered path, else
            node.reply(sess, rid, m.Error(code=ErrorCode.RATE_LIMITED, message=UNREAD))
            return 1
        for i, item in enumerate(req.items):
            if i and (refusal := node.rate_limited(sess, now)) is not None:
                node.reply(sess, item.rid, m.Error(code=ErrorCode.RATE_LIMITED, message=refusal))
                return 1
            if not sess.busy:
                batched = self.batches.batchable(sess, item.rid, item.send, t0)
                if batched is not None:
                    sends.append(batched)
                    continue
            # Counted by its own size (the ciphertext, and a bound for the rest),
            # so that one large send among small ones is not counted as small.
            frame = m.ClientFrame(v=PROTOCOL_VERSION, rid=item.rid, req=item.send)
            size = len(item.send.envelope.ct) + SEND_FIELDS_BYTES
            if not self._enqueue(sess, (frame, size, t0, item.rid)):
                return 0  # counted there
        return 0

    def _enqueue(self, sess: Session, item: tuple[object, int, float, int]) -> bool:
        """Queue a request on the connection's ordered path; False (and it is
        refused) if the path is full."""
        if self.node.ordered.enqueue(sess, item):  # type: ignore[arg-type]
            return True
        self._n_limited.inc()
        self.node.reply(
            sess,
            item[3],
            m.Error(
                code=ErrorCode.RATE_LIMITED,
                message="too many requests in flight on this connection",
            ),
        )
        return False

    def _pong(self, sess: Session, rid: int, req: m.Ping) -> None:
        node = self.node
        node.liveness.note_ping(sess, req)
        pong = m.Pong(t=req.t, time=int(time.time() * 1000), node=node.node_name, boot=node.boot)
        self.send(sess.routing_id, encode_reply(rid, pong))

    # --- sending ---------------------------------------------------------------
    def send(self, routing_id: bytes, data: bytes) -> bool:
        """Send without ever waiting, and count the bytes against the
        connection's flow (asking for proof of reading when due)."""
        if not self.send_frame(routing_id, data):
            return False
        node = self.node
        sess = node.sessions.get(routing_id)
        if sess is not None:
            mark = node.flow.queued(sess.flow, len(data))
            if mark is not None:
                frame = encode_reply(0, m.Mark(mark=mark))
                if self.send_frame(routing_id, frame):
                    node.flow.marked(sess.flow, mark, len(frame))
        return True

    def send_frame(self, routing_id: bytes, data: bytes) -> bool:
        """Send without ever waiting: a peer that is gone or whose queue is full
        loses this frame (clients detect the gap by seq and fetch it)."""
        sock = self.sock
        if not self._scheduled:
            self._kick()  # a send can take the FD's edge: look again next turn
        try:
            sock.send(routing_id, _MORE_NOWAIT)
            sock.send(data, _NOWAIT)
        except zmq.Again:
            self._dropped.inc()
            return False
        except zmq.ZMQError as exc:
            self._dropped.inc()
            if exc.errno == _EHOSTUNREACH:
                self.node.liveness.unreachable(routing_id)
            else:
                log.warning("send to a client failed: %s", exc)
            return False
        return True
