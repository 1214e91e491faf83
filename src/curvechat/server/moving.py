"""Asking a node's clients to move to another node (`push_move`).

What it is for: a node that drains, or that reaches no etcd member, asks
every connection still here to move, and asks again every `every` seconds
while it stays (a push may be lost); a node that rebalances asks some of
them (homing.py), naming the live nodes or only the one to go to. A
client moves to the next node of its order (the named ones first) and
resends what was not acknowledged there.

It must never close a connection: a client that does not know `push_move`
stays until it leaves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from curvechat.protocol import encode_reply
from curvechat.protocol import messages as m
from curvechat.server.node import ChatNode


class MoveAsker:
    def __init__(self, node: ChatNode, reason: str, every: float, *, peers: bool = False) -> None:
        """`peers`: name the node's live nodes in the request (the client
        then knows where to go even if it connected while one was down)."""
        self.node = node
        self.reason = reason
        self.every = every
        self.peers = peers
        self._asked: dict[bytes, float] = {}  # routing id -> when last asked

    def reset(self) -> None:
        """A new round: everyone is asked at the next `ask`."""
        self._asked.clear()

    def ask(
        self,
        *,
        connected_before_ms: int | None = None,
        only: Iterable[bytes] | None = None,
        limit: int | None = None,
        to: Sequence[str] = (),
    ) -> list[bytes]:
        """Ask the connections not asked within `every` seconds (only those
        connected before `connected_before_ms`, and only those of `only`, if
        given; at most `limit`); forget the gone. Returns the routing ids it
        asked (a connection skipped here was not asked, and is not moving).
        `to`: name only these nodes (where the client should go), not the
        live ones."""
        now = time.monotonic()
        sessions = self.node.sessions
        peers = list(to) if to else list(self.node.peers) if self.peers else []
        frame = encode_reply(0, m.Move(reason=self.reason, peers=peers))
        asked: list[bytes] = []
        for routing_id in list(sessions if only is None else only):
            sess = sessions.get(routing_id)
            if sess is None or (limit is not None and len(asked) >= limit):
                continue
            if connected_before_ms is not None and sess.connected_ms >= connected_before_ms:
                continue
            if sess.gone is None and now - self._asked.get(routing_id, -self.every) >= self.every:
                self._asked[routing_id] = now
                self.node.send(routing_id, frame)
                asked.append(routing_id)
        for routing_id in [r for r in self._asked if r not in sessions]:
            del self._asked[routing_id]
        return asked
