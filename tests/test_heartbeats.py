"""libzmq 4.3.5 aborts a process when a connection that beats, or whose peer
beats, fails while libzmq holds a full inbound queue for it
(`curvechat/heartbeats.py`). Every socket of curvechat's that beats or
answers beats takes every frame in, so never gets there.

What fails is the whole process, so each case runs in a child
(`tests/support/beats.py`) and is judged by how the child ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import zmq
import zmq.asyncio

from curvechat.client.dealer import open_dealer
from curvechat.client.peer.link import PeerLink
from curvechat.client.peer.listener import PeerListener
from curvechat.crypto.identity import Identity
from curvechat.protocol import peer as p
from curvechat.protocol.connect import ServerAddress
from curvechat.server.forwarder import link_heartbeats
from curvechat.server.nodelink import bind_link
from curvechat.server.router import open_router

TESTS = Path(__file__).parent


def child(case: str, kind: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "support.beats", case, kind],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
    )


def test_a_socket_that_beats_with_a_bounded_queue_aborts_when_its_connection_fails() -> None:
    # What the cases below would meet with a bounded queue (the client's
    # socket had libzmq's default of 1,000 frames).
    done = child("timer", "bounded")
    assert done.returncode == -signal.SIGABRT, done.stderr[-2000:]
    assert "!_io_error" in done.stderr


def test_the_clients_socket_lives_through_its_node_going_away_unread() -> None:
    done = child("timer", "client")
    assert done.returncode == 0, done.stderr[-2000:]


def test_both_ends_of_a_node_link_live_through_it() -> None:
    done = child("timer", "link")
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 0  # what was queued before the failure is still read
    done = child("ping", "link")
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_nodes_socket_for_clients_lives_through_a_client_that_beats_and_resets() -> None:
    done = child("ping", "node")
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 0


def test_every_socket_that_beats_or_answers_beats_takes_every_frame_in() -> None:
    # A bounded queue on any of them would bring the abort back: a bound
    # large enough that the cases above do not fill it still fills under load.
    ctx = zmq.asyncio.Context()
    server_pub, server_sec = zmq.curve_keypair()
    pub, sec = zmq.curve_keypair()
    made: list[zmq.Socket[bytes] | zmq.asyncio.Socket] = []
    try:
        dealer, monitor = open_dealer(
            ctx,
            ServerAddress("tcp://127.0.0.1:9", server_pub.decode()),
            public_key=pub,
            secret_key=sec,
            beat_s=5.0,
            liveness=3,
        )
        link, _ = bind_link(ctx, server_pub, server_sec, "tcp://127.0.0.1:*")
        router, router_monitor = open_router(
            ctx, "tcp://127.0.0.1:*", secret_key=server_sec, public_key=server_pub
        )
        forward = ctx.socket(zmq.DEALER)
        link_heartbeats(forward)
        made += [dealer, monitor, link, router, router_monitor, forward]
        for sock in (dealer, link, router, forward):
            assert sock.getsockopt(zmq.RCVHWM) == 0
        # The peer sockets answer a member's beats: client/peer/intake.py and
        # the link's watch bound what they hold instead.
        peer_link = PeerLink(
            ctx,
            Identity.generate("me"),
            p.PeerRecord(
                user="m", transport_pub=b"\x01" * 32, endpoints=["tcp://127.0.0.1:9"], ts=1
            ),
        )
        try:
            assert peer_link._socket().getsockopt(zmq.RCVHWM) == 0
        finally:
            peer_link.reset()
        for sock in (dealer, link, forward):
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) > 0
    finally:
        for sock in made:
            sock.close(linger=0)
        ctx.term()


async def test_the_peer_listener_takes_every_frame_in() -> None:
    listener = PeerListener(
        Identity.generate("me"), lambda key: True, lambda key: None, lambda k, u: None, _never
    )
    await listener.start()
    try:
        assert listener._sock is not None and listener._sock.getsockopt(zmq.RCVHWM) == 0
    finally:
        await listener.close()


async def _never(user: str, req: p.AnyPeerRequest) -> p.AnyPeerReply:
    raise AssertionError("asked nothing")
