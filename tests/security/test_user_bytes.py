"""What one account can make a node store is bounded by a byte rate: one
connection sending 64 KiB messages had a node store 28.5 MiB/s (2.4 TB a
day). A user's requests take their size from a budget shared by all of the
user's connections and kept across reconnects; past it, `rate_limited`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from support.raw import RawClient, Room
from support.servers import ServerProcess

RATE = 64 * 1024  # bytes/s: a budget of 16 s worth, 1 MiB
BIG = "\u20ac" * 15_000  # 45,000 bytes of UTF-8


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "node", extra_args=("--rate-user-bytes", str(RATE))).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


def _send_until_refused(raw: RawClient, room: Room, who: Identity, most: int) -> tuple[int, str]:
    for sent in range(most):
        reply = raw.request(room.send(who, BIG))
        if isinstance(reply, m.Error):
            assert reply.code == "rate_limited", reply
            return sent, reply.message
        assert isinstance(reply, m.SendAck), reply
    return most, ""


def test_one_users_bytes_are_bounded_across_connections(node: ServerProcess) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    alice = Identity.generate("alice")
    try:
        raw = RawClient(ctx, node.connect, alice)
        raw.register()
        room = Room(alice, "r", [])
        assert isinstance(raw.request(room.create), m.RoomChanged)
        acked, why = _send_until_refused(raw, room, alice, 40)
        assert 20 <= acked <= 24, acked  # 1 MiB of 45 KB sends
        assert f"more than {RATE:,} bytes/s of requests for alice" in why
        raw.close()
        # a new connection of the same user starts from what is left
        raw = RawClient(ctx, node.connect, alice)
        again, _ = _send_until_refused(raw, room, alice, 40)
        assert again <= 1, again
        # nor do the frames after a `bye` (the session's user unknown until
        # one of them is served) go uncharged
        acked = 0
        for _ in range(5):
            raw.send(m.Bye())
            for _ in range(8):
                raw.send(room.send(alice, BIG))
            replies = [raw.recv() for _ in range(9)]
            acked += sum(isinstance(r, m.SendAck) for r in replies)
        assert acked <= 2, acked
        raw.close()
        # another user has a budget of their own
        bob = Identity.generate("bob")
        other = RawClient(ctx, node.connect, bob)
        other.register()
        theirs = Room(bob, "b", [])
        assert isinstance(other.request(theirs.create), m.RoomChanged)
        assert isinstance(other.request(theirs.send(bob, BIG)), m.SendAck)
        other.close()
    finally:
        ctx.destroy(linger=0)
