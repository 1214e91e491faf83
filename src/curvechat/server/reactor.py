"""The node's hot path: one plain (non-asyncio) ROUTER socket, read in
batches, written without waiting.

When the socket's FD says it may be readable, the reactor receives until
the socket would block (at most BATCH_MAX frames, then it comes back on the
next loop turn) and handles the batch in one pass:

* pings are answered at once, also while the connection's other requests
  wait on the store; a `hello` from a connection whose user is known and
  that has nothing waiting is answered at once too;
* a plain send from a connection with nothing waiting, into a room whose
  cached view admits it, joins the batch's commit: one store call for the
  whole batch (the store's group commit), one task, and when it returns the
  acks and pushes of every message go out in commit order, each client's
  in as few frames as they fit in (fanout.py);
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
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from curvechat.protocol import (
    ErrorCode,
    RemoteProtocolError,
    decode_request,
    encode,
    encode_reply,
    peek_request_id,
)
from curvechat.protocol import messages as m
from curvechat.server.handlers import OUT_OF_ORDER_TEXT, Handlers, Refusal
from curvechat.server.rooms import RoomView
from curvechat.server.session import SESSION_QUEUE_MAX, Session
from curvechat.store import Committed, NewMessage, StoreUnavailable

if TYPE_CHECKING:
    from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

BATCH_MAX = 2048  # frames handled in one pass before the loop runs anything else
REQUEST_BYTES_MAX = 2 * 1024 * 1024  # request bytes waiting to be served, per connection
_PLAIN_SEND = Handlers.send
OUT_OF_ORDER = m.Error(code=ErrorCode.OUT_OF_ORDER, message=OUT_OF_ORDER_TEXT)
# Flags as plain ints: combining pyzmq's flag enums costs more than the send.
_NOWAIT = int(zmq.NOBLOCK)
_MORE_NOWAIT = int(zmq.SNDMORE) | int(zmq.NOBLOCK)
_EHOSTUNREACH = int(zmq.EHOSTUNREACH)


@dataclass(slots=True)
class _Send:
    """One send of a batch commit."""

    sess: Session
    rid: int
    env: m.Envelope
    msg: NewMessage
    view: RoomView
    t0: float


class Reactor:
    def __init__(self, node: ChatNode, sock: zmq.Socket[bytes]) -> None:
        self.node = node
        self.sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._scheduled = False
        # Commit plain sends in batches; not when the send handler was replaced
        # (a test double's): then every send goes to it.
        self.fast_sends = Handlers.send is _PLAIN_SEND
        metrics = node.metrics
        requests = metrics.requests
        # Label children bound once: counting is one call per batch.
        self._n_ping = requests.labels("ping", "ok")
        self._n_hello = requests.labels("hello", "ok")
        self._n_send = requests.labels("send", "ok")
        self._n_limited = requests.labels("?", ErrorCode.RATE_LIMITED)
        self._dropped = metrics.pushes_dropped
        self._accepted = metrics.messages_accepted
        self._delivered = metrics.messages_delivered
        self._ack_s = metrics.send_ack_seconds
        self._deliver_s = metrics.send_deliver_seconds
        self._commit_s = metrics.store_commit_seconds

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
        try:
            while len(batch) < BATCH_MAX:
                batch.append(recv(_NOWAIT, copy=False))
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
        sends: list[_Send] = []
        pings = hellos = limited = 0
        for frames in batch:
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
            refusal = node.rate_limited(sess, now)
            if refusal is None and sess.queued_bytes + len(data) > REQUEST_BYTES_MAX:
                refusal = "too many request bytes in flight on this connection"
            if refusal is not None:
                limited += 1
                node.reply(
                    sess,
                    peek_request_id(data),
                    m.Error(code=ErrorCode.RATE_LIMITED, message=refusal),
                )
                continue
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
            if kind is m.Ping:
                pings += 1
                self._pong(sess, frame.rid, req)  # type: ignore[arg-type]
                continue
            if not sess.busy:
                if kind is m.Send:
                    item = self._batchable(sess, frame.rid, req, t0)  # type: ignore[arg-type]
                    if item is not None:
                        sends.append(item)
                        continue
                elif (
                    kind is m.Hello
                    and sess.resolved
                    and not node.draining  # its refusal is the handler's
                    and not node.flow.over_budget(sess.flow)
                ):
                    hellos += 1
                    sess.client = req.client  # type: ignore[union-attr]
                    sess.batch = req.batch  # type: ignore[union-attr]
                    node.reply(sess, frame.rid, node.welcome(sess))
                    continue
            self._enqueue(sess, (frame, len(data), t0, frame.rid))
        if sends:
            self._commit(sends)
        if pings:
            self._n_ping.inc(pings)
        if hellos:
            self._n_hello.inc(hellos)
        if limited:
            self._n_limited.inc(limited)

    def _enqueue(self, sess: Session, item: tuple[object, int, float, int]) -> None:
        if not self.node.ordered.enqueue(sess, item):  # type: ignore[arg-type]
            self._n_limited.inc()
            self.node.reply(
                sess,
                item[3],
                m.Error(
                    code=ErrorCode.RATE_LIMITED,
                    message="too many requests in flight on this connection",
                ),
            )

    def _pong(self, sess: Session, rid: int, req: m.Ping) -> None:
        node = self.node
        node.liveness.note_ping(sess, req)
        pong = m.Pong(t=req.t, time=int(time.time() * 1000), node=node.node_name, boot=node.boot)
        self.send(sess.routing_id, encode_reply(rid, pong))

    def _batchable(self, sess: Session, rid: int, req: m.Send, t0: float) -> _Send | None:
        """The send as a member of the batch commit, or None when the handlers
        must decide (anything to refuse, reload or wait for)."""
        user = sess.user
        env = req.envelope
        if (
            not self.fast_sends
            or user is None
            or env.sender != user
            or sess.inflight >= SESSION_QUEUE_MAX
            or self.node.flow.over_budget(sess.flow)
        ):
            return None
        view = self.node.rooms.peek(env.room)
        if (
            view is None
            or env.epoch != view.record.epoch
            or view.epoch_is_stale
            or not view.state.is_member(user)
        ):
            return None
        record = view.record
        msg = NewMessage(
            env.room,
            user,
            env.txn,
            encode(env),
            expect=(record.epoch, record.op_head),
            after=req.after,
        )
        return _Send(sess, rid, env, msg, view, t0)

    # --- batch commits -------------------------------------------------------
    def _commit(self, sends: list[_Send]) -> None:
        # The task is created now, before anything a later batch or a later
        # request of these connections can queue: tasks start in the order
        # created and the store commits its queue in order.
        task = asyncio.ensure_future(self._settle(sends))
        seen: set[int] = set()
        for s in sends:
            sess = s.sess
            sess.inflight += 1
            if id(sess) not in seen:
                seen.add(id(sess))
                sess.sends.add(task)
                task.add_done_callback(sess.sends.discard)

    async def _settle(self, sends: list[_Send]) -> None:
        node = self.node
        t_commit = time.perf_counter()
        try:
            results = await node.append_messages([s.msg for s in sends])
        except StoreUnavailable as exc:
            self._fail(sends, ErrorCode.STORE_UNAVAILABLE, f"store unavailable: {exc}")
            return
        except asyncio.CancelledError:
            self._release(sends)
            raise
        except Exception:  # NoSuchRoom (a room gone meanwhile) or a bug: one by one
            log.debug("batch commit failed; serving its sends one by one", exc_info=True)
            self._release(sends)
            for s in sends:
                await self._again(s)
            return
        self._release(sends)
        done_t = time.perf_counter()
        self._commit_s.observe(done_t - t_commit)
        again = self._answer(sends, results, done_t)
        for s in again:
            await self._again(s)

    def _release(self, sends: list[_Send]) -> None:
        for s in sends:
            s.sess.inflight -= 1

    def _answer(self, sends: list[_Send], results: list[Committed], now: float) -> list[_Send]:
        """Push and ack every committed message, in commit order; returns the
        stale ones (the room changed before the commit)."""
        node = self.node
        accepted = delivered = acked = 0
        members: dict[str, list[str]] = {}
        stale: list[_Send] = []
        out = node.fanout()
        for s, done in zip(sends, results, strict=True):
            if done.stale:
                stale.append(s)
                continue
            if done.behind:
                node.metrics.observe_request("send", ErrorCode.OUT_OF_ORDER)
                self.send(s.sess.routing_id, encode_reply(s.rid, OUT_OF_ORDER))
                continue
            env = s.env
            if not done.duplicate:
                accepted += 1
            # A duplicate is pushed too: its first commit may have gone
            # unpushed (an answer lost to a deadline while etcd committed it);
            # clients keep one copy per seq. A remote one is pushed by the
            # owner and the watch.
            if not done.remote:
                room = env.room
                who = members.get(room)
                if who is None:
                    who = members[room] = s.view.members()
                push = m.MessagePush(
                    room=room, message=m.StoredMessage(seq=done.seq, ts=done.ts_ms, envelope=env)
                )
                sent = out.push(who, push, skip=s.sess.routing_id)
                delivered += sent
                if sent:
                    self._deliver_s.observe(now - s.t0)
            ack = m.SendAck(
                room=env.room, txn=env.txn, seq=done.seq, ts=done.ts_ms, duplicate=done.duplicate
            )
            out.ack(s.sess, s.rid, ack)
            self._ack_s.observe(time.perf_counter() - s.t0)
            acked += 1
        delivered -= out.flush()
        self._n_send.inc(acked)
        if accepted:
            self._accepted.inc(accepted)
        if delivered:
            self._delivered.inc(delivered)
        return stale

    async def _again(self, s: _Send) -> None:
        """Serve one send through the handlers (they reload and re-check)."""
        node = self.node
        s.sess.request_t0 = s.t0
        try:
            reply = await node.handlers.dispatch(s.sess, m.Send(envelope=s.env, after=s.msg.after))
            code = "ok"
        except Refusal as exc:
            reply, code = m.Error(code=exc.code, message=exc.message[:500]), exc.code
        except Exception:
            log.exception("internal error serving a send")
            reply = m.Error(code=ErrorCode.INTERNAL, message="internal server error")
            code = ErrorCode.INTERNAL
        node.metrics.observe_request("send", code)
        node.reply(s.sess, s.rid, reply)

    def _fail(self, sends: list[_Send], code: ErrorCode, message: str) -> None:
        self._release(sends)
        for s in sends:
            self.node.metrics.observe_request("send", code)
            self.node.reply(s.sess, s.rid, m.Error(code=code, message=message[:500]))

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
                self.node.drop_session(routing_id)
            else:
                log.warning("send to a client failed: %s", exc)
            return False
        return True
