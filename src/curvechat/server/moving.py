"""Asking a node's clients to move to another node (`push_move`).

What it is for: a node that drains, or that reaches no etcd member, asks
every connection still here to move, and asks again every `every` seconds
while it stays (a push may be lost). A client moves to the next node of its
order and resends what was not acknowledged there.

It must never close a connection: a client that does not know `push_move`
stays until it leaves.
"""

from __future__ import annotations

import time

from curvechat.protocol import encode_reply
from curvechat.protocol import messages as m
from curvechat.server.node import ChatNode


class MoveAsker:
    def __init__(self, node: ChatNode, reason: str, every: float) -> None:
        self.node = node
        self.every = every
        self._frame = encode_reply(0, m.Move(reason=reason))
        self._asked: dict[bytes, float] = {}  # routing id -> when last asked

    def reset(self) -> None:
        """A new round: everyone is asked at the next `ask`."""
        self._asked.clear()

    def ask(self, *, connected_before_ms: int | None = None) -> None:
        """Ask the connections not asked within `every` seconds (only those
        connected before `connected_before_ms`, if given); forget the gone."""
        now = time.monotonic()
        sessions = self.node.sessions
        for routing_id, sess in list(sessions.items()):
            if connected_before_ms is not None and sess.connected_ms >= connected_before_ms:
                continue
            if sess.gone is None and now - self._asked.get(routing_id, -self.every) >= self.every:
                self._asked[routing_id] = now
                self.node.send(routing_id, self._frame)
        for routing_id in [r for r in self._asked if r not in sessions]:
            del self._asked[routing_id]
