"""A man in the middle on one client's replies and pushes: what a malicious
server can put on the wire, against the real node underneath (the ground
truth stays the honest node's store).

Every reply and push the victim's current socket delivers (`NodeSocket.
_deliver`, after a `batch` frame is unpacked) goes through `hook(rid, msg)`,
which returns the (rid, msg) pairs to deliver instead (none: dropped).
`release` delivers held pairs later, all in one go (one turn of the loop:
as if they had come in one `batch` frame).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from curvechat.client.engine import ChatClient
from curvechat.client.nodesocket import NodeSocket
from curvechat.protocol import messages as m

Hook = Callable[[int, m.AnyReply], list[tuple[int, m.AnyReply]]]


class Mitm:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, victim: ChatClient) -> None:
        self.victim = victim
        self.hook: Hook | None = None
        self.held: list[tuple[int, m.AnyReply]] = []
        self.seen: list[tuple[int, m.AnyReply]] = []
        real = NodeSocket._deliver
        self._real = real
        mitm = self

        def deliver(sock: NodeSocket, rid: int, msg: m.AnyReply) -> None:
            if getattr(victim.conn, "_sock", None) is not sock or mitm.hook is None:
                real(sock, rid, msg)
                return
            mitm.seen.append((rid, msg))
            for r, x in mitm.hook(rid, msg):
                real(sock, r, x)

        monkeypatch.setattr(NodeSocket, "_deliver", deliver)

    def release(self, pairs: list[tuple[int, m.AnyReply]] | None = None) -> None:
        """Deliver `pairs` (default: everything held) now, in order."""
        pairs = list(self.held) if pairs is None else pairs
        if pairs is self.held or pairs == self.held:
            self.held.clear()
        sock = self.victim.conn._sock
        for rid, msg in pairs:
            self._real(sock, rid, msg)

    def on_acks(self, answer: Callable[[int, m.SendAck], list[tuple[int, m.AnyReply]]]) -> None:
        """Every ack goes through `answer(rid, ack)`; the rest passes as it is."""
        self.hook = lambda rid, msg: (
            answer(rid, msg) if isinstance(msg, m.SendAck) else [(rid, msg)]
        )

    def hold_acks(self, n: int, then: Callable[[list[tuple[int, m.SendAck]]], None]) -> None:
        """Hold every ack until `n` are held, then give those to `then`,
        which delivers them as it likes (`release`)."""
        held: list[tuple[int, m.SendAck]] = []

        def hold(rid: int, ack: m.SendAck) -> list[tuple[int, m.AnyReply]]:
            held.append((rid, ack))
            if len(held) == n:
                then(list(held))
                held.clear()
            return []

        self.on_acks(hold)

    def push(self, msg: m.AnyReply) -> None:
        """A push (rid 0) as if the node had sent it."""
        self._real(self.victim.conn._sock, 0, msg)


def acks(pairs: list[tuple[int, Any]]) -> list[tuple[int, m.SendAck]]:
    return [(r, x) for r, x in pairs if isinstance(x, m.SendAck)]
