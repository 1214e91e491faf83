"""The reactor's batch commit of plain sends (see reactor.py): one store
call for a drained batch's sends, then their acks and pushes in commit
order, gathered per connection (fanout.py).

A send joins the batch only when nothing of its connection waits on the
ordered path and the room's cached view admits it (`batchable`); a send
whose commit comes back stale (the room changed meanwhile), or whose batch
failed for a reason other than the store being unavailable, is served
again one by one through the handlers, which reload and re-check.

This module must never block on a peer (it sends through the reactor's
non-blocking send), never decide an access rule the handlers would decide
otherwise, and never answer a send before its commit returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curvechat.protocol import ErrorCode, encode, encode_reply, message_push
from curvechat.protocol import messages as m
from curvechat.server.handlers import OUT_OF_ORDER_TEXT, Handlers, Refusal
from curvechat.server.metrics import observe_all
from curvechat.server.room_handlers import store_refusal
from curvechat.server.rooms import RoomView
from curvechat.server.session import SESSION_QUEUE_MAX, Session
from curvechat.server.stored import push_stored
from curvechat.store import Committed, NewMessage, StoreUnavailable

if TYPE_CHECKING:
    from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

_PLAIN_SEND = Handlers.send
OUT_OF_ORDER = m.Error(code=ErrorCode.OUT_OF_ORDER, message=OUT_OF_ORDER_TEXT)


@dataclass(slots=True)
class PlainSend:
    """One send of a batch commit."""

    sess: Session
    rid: int
    env: m.Envelope
    msg: NewMessage
    view: RoomView
    t0: float


class SendBatches:
    def __init__(self, node: ChatNode, send: Callable[[bytes, bytes], bool]) -> None:
        self.node = node
        self.send = send
        # Commit plain sends in batches; not when the send handler was replaced
        # (a test double's): then every send goes to it.
        self.fast_sends = Handlers.send is _PLAIN_SEND
        metrics = node.metrics
        # Label children bound once: counting is one call per batch.
        self._n_send = metrics.requests.labels("send", "ok")
        self._accepted = metrics.messages_accepted
        self._delivered = metrics.messages_delivered
        self._ack_s = metrics.send_ack_seconds
        self._deliver_s = metrics.send_deliver_seconds
        self._commit_s = metrics.store_commit_seconds

    def batchable(self, sess: Session, rid: int, req: m.Send, t0: float) -> PlainSend | None:
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
        return PlainSend(sess, rid, env, msg, view, t0)

    def commit(self, sends: list[PlainSend]) -> None:
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

    async def _settle(self, sends: list[PlainSend]) -> None:
        node = self.node
        t_commit = time.perf_counter()
        try:
            results = await node.append_messages([s.msg for s in sends])
        except StoreUnavailable as exc:
            refusal = store_refusal(exc)
            self._fail(sends, refusal.code, refusal.message)
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
        again, duplicates = self._answer(sends, results, done_t)
        for s in again:
            await self._again(s)
        if duplicates:
            await push_stored(node, duplicates)

    def _release(self, sends: list[PlainSend]) -> None:
        for s in sends:
            s.sess.inflight -= 1

    def _answer(
        self, sends: list[PlainSend], results: list[Committed], now: float
    ) -> tuple[list[PlainSend], list[tuple[str, int, bytes, int]]]:
        """Push and ack every committed message, in commit order; returns the
        stale ones (the room changed before the commit) and the (room, seq) of
        the duplicates (with the resend's connection and size), to push again
        (`stored.push_stored`)."""
        node = self.node
        accepted = delivered = 0
        acked: list[float] = []  # the t0 of each send acked
        delivered_t0: list[float] = []  # the t0 of each send pushed to someone
        members: dict[str, list[str]] = {}
        stale: list[PlainSend] = []
        duplicates: list[tuple[str, int, bytes, int]] = []
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
            if done.duplicate:
                if not done.remote:  # (a remote one is pushed by the owner and the watch)
                    duplicates.append((env.room, done.seq, s.sess.routing_id, len(s.msg.envelope)))
            else:
                accepted += 1
            if not done.remote and not done.duplicate:
                room = env.room
                who = members.get(room)
                if who is None:
                    who = members[room] = s.view.members()
                push = message_push(room, done.seq, done.ts_ms, s.msg.envelope)
                sent = out.push(who, push, skip=s.sess.routing_id)
                delivered += sent
                if sent:
                    delivered_t0.append(s.t0)
            ack = m.SendAck(
                room=env.room, txn=env.txn, seq=done.seq, ts=done.ts_ms, duplicate=done.duplicate
            )
            out.ack(s.sess, s.rid, ack)
            acked.append(s.t0)
        delivered -= out.flush()
        t_ack = time.perf_counter()
        observe_all(self._ack_s, [t_ack - t0 for t0 in acked])
        observe_all(self._deliver_s, [now - t0 for t0 in delivered_t0])
        self._n_send.inc(len(acked))
        if accepted:
            self._accepted.inc(accepted)
        if delivered:
            self._delivered.inc(delivered)
        return stale, duplicates

    async def _again(self, s: PlainSend) -> None:
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

    def _fail(self, sends: list[PlainSend], code: ErrorCode, message: str) -> None:
        self._release(sends)
        for s in sends:
            self.node.metrics.observe_request("send", code)
            self.node.reply(s.sess, s.rid, m.Error(code=code, message=message[:500]))
