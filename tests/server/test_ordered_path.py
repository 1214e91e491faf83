"""The ordered path (server/session.py) without sockets: a connection's sends
are pipelined once each one's commit is queued, and anything else waits for
the sends in flight."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from curvechat.protocol import PROTOCOL_VERSION, decode_server_frame
from curvechat.protocol import messages as m
from curvechat.server.flow import Flow
from curvechat.server.session import OrderedPath, Session


class FakeNode:
    """What the ordered path asks of the node; the handlers are this test's."""

    def __init__(self, queue_commit: bool = True) -> None:
        self.queue_commit = queue_commit
        self.log: list[str] = []
        self.commits: dict[int, asyncio.Future[None]] = {}
        self.replies: list[tuple[int, str]] = []
        noop = SimpleNamespace(inc=lambda *a: None, observe=lambda *a: None)
        self.metrics = SimpleNamespace(
            requests=SimpleNamespace(labels=lambda *a: noop),
            observe_request=lambda *a: None,
            send_ack_seconds=noop,
        )
        self.flow = SimpleNamespace(over_budget=lambda f: False)
        self.handlers = SimpleNamespace(dispatch=self.dispatch)

    async def dispatch(
        self, sess: Session, req: m.AnyRequest, queued: asyncio.Future[None] | None = None
    ) -> m.AnyReply:
        if isinstance(req, m.Send):
            n = int(req.envelope.txn)
            self.log.append(f"start {n}")
            commit = self.commits[n] = asyncio.get_running_loop().create_future()
            if self.queue_commit and queued is not None:
                queued.set_result(None)  # what Handlers.send does once it queued
            await commit
            self.log.append(f"acked {n}")
            return m.SendAck(room="r", txn=req.envelope.txn, seq=n, ts=0)
        self.log.append("other")
        return m.Pong(t=0, time=0, node="n", boot="b")

    def reply(self, sess: Session, rid: int, msg: m.AnyReply) -> None:
        self.replies.append((rid, type(msg).__name__))

    def send(self, routing_id: bytes, data: bytes) -> bool:
        frame = decode_server_frame(data)
        self.replies.append((frame.rid, type(frame.msg).__name__))
        return True


def _send(n: int) -> m.ClientFrame:
    env = m.Envelope(room="r", sender="alice", epoch=0, txn=str(n), nonce=b"", ct=b"", sig=b"")
    return m.ClientFrame(v=PROTOCOL_VERSION, rid=n, req=m.Send(envelope=env))


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_sends_start_before_the_earlier_ones_are_acked_and_others_wait() -> None:
    node: Any = FakeNode()
    path = OrderedPath(node)
    sess = Session(b"id", "key", user="alice", resolved=True, flow=Flow())
    for n in (1, 2, 3):
        assert path.enqueue(sess, (_send(n), 10, 0.0, n))
    ping = m.ClientFrame(v=PROTOCOL_VERSION, rid=9, req=m.Hello(client="t"))
    assert path.enqueue(sess, (ping, 10, 0.0, 9))
    await _settle()
    # Three commits queued at once, the other request waits behind them.
    assert node.log == ["start 1", "start 2", "start 3"]
    for n in (1, 2, 3):
        node.commits[n].set_result(None)
    await _settle()
    assert node.log[3:] == ["acked 1", "acked 2", "acked 3", "other"]
    assert [rid for rid, _ in node.replies] == [1, 2, 3, 9]
    assert sess.pending is None and not sess.busy
    # An idle connection keeps no finished task (nor what it holds).
    assert sess.worker is None and id(sess) not in path.active


async def test_a_send_that_ends_before_queuing_its_commit_lets_the_next_start() -> None:
    node: Any = FakeNode(queue_commit=False)  # never says its commit is queued
    path = OrderedPath(node)
    sess = Session(b"id", "key", user="alice", resolved=True, flow=Flow())
    for n in (1, 2):
        path.enqueue(sess, (_send(n), 10, 0.0, n))
    await _settle()
    assert node.log == ["start 1"]  # the next waits: nothing said it may go
    node.commits[1].set_result(None)
    await _settle()
    assert node.log == ["start 1", "acked 1", "start 2"]
    node.commits[2].set_result(None)
    await _settle()
    assert [rid for rid, _ in node.replies] == [1, 2]
