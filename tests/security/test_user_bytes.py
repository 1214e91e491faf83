"""What one account can make a node store is bounded by a byte rate: one
connection sending 64 KiB messages had a node store 28.5 MiB/s (2.4 TB a
day). A user's requests take their size from a budget shared by all of the
user's connections and kept across reconnects; past it, `rate_limited`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_FRAME_BYTES
from curvechat.server.ratelimit import KEY_BURST_FRAMES, ByteBudgets

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
        # nor does a transport key registered afresh bring a budget of its own
        acked = 0
        for _ in range(3):
            rekeyed = Identity.from_secrets("alice", alice.sign_seed, os.urandom(32))
            raw = RawClient(ctx, node.connect, rekeyed)
            raw.register()
            more, _ = _send_until_refused(raw, room, rekeyed, 40)
            acked += more
            raw.close()
        assert acked <= 3, acked  # charged to alice once her key is known: spent
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


def test_a_budget_always_holds_the_largest_frame() -> None:
    """With a rate whose 16 s are less than one frame, the largest frame
    still passes (it waits for the budget to refill, never for ever)."""
    budgets = ByteBudgets(rate=1_000)
    assert budgets.charge("alice", "k1", MAX_FRAME_BYTES, now=0.0) is None
    why = budgets.charge("alice", "k1", MAX_FRAME_BYTES, now=1.0)
    assert why is not None and "for alice" in why
    assert budgets.charge("alice", "k1", MAX_FRAME_BYTES, now=1.0 + MAX_FRAME_BYTES / 1_000) is None
    # a key no user is known for holds a few frames, apart from its user's;
    # one over the largest size is charged as that size (refused next)
    for _ in range(KEY_BURST_FRAMES):
        assert budgets.charge(None, "k2", 2 * MAX_FRAME_BYTES, now=0.0) is None
    assert "for this key" in (budgets.charge(None, "k2", 1, now=0.0) or "")
