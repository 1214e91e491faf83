"""A child process for tests/test_heartbeats.py: one of curvechat's sockets
that beat, a connection of it that fails while libzmq holds a full inbound
queue for it, and whether the process lives through that (it then reads
the queue and prints how many frames it read) or libzmq aborts it.

    python -m support.beats timer bounded|client|link
    python -m support.beats ping bounded|link|node

``timer``: the socket under test is a DEALER that beats; its node sends it
frames it does not read, then goes away; the socket's heartbeat timer fires
before it reads. ``ping``: the socket under test is a ROUTER that does not
read; its peer beats every millisecond among its frames, then resets the
connection; then the ROUTER reads. ``bounded`` is a plain socket with a
bounded inbound queue (what libzmq aborts on), ``client`` the client's
socket to its node (`client.dealer.open_dealer`), ``link`` an end of the
node link (`server.forwarder.link_heartbeats`, `server.nodelink.bind_link`),
``node`` the node's socket for its clients (`server.router.open_router`),
which does not beat but answers its clients' beats.
"""

from __future__ import annotations

import contextlib
import sys
import time

import zmq
import zmq.asyncio

from curvechat.client.dealer import open_dealer
from curvechat.protocol.connect import ServerAddress
from curvechat.server.forwarder import link_heartbeats
from curvechat.server.nodelink import bind_link
from curvechat.server.router import open_router

FRAMES = 2000
CONNECTIONS = 8
"""Connections the timer case fails at once."""
FILL = 10_000
"""Frames the ping case sends at once before the paced ones: as many as the
node's sockets for clients and links queued before they took every frame."""
ROUNDS = 4
"""Connections the ping case fails one after another: a bounded queue
aborts the process in most single tries (a PING has to be among the bytes
libzmq had read past the full queue), so in nearly every run of six."""


def _read_all(sock: zmq.Socket[bytes]) -> int:
    n = 0
    while sock.poll(500):
        sock.recv_multipart()
        n += 1
    return n


def _keys(sock: zmq.Socket[bytes], server_pub: bytes) -> None:
    sock.linger = 0
    sock.curve_serverkey = server_pub
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()


def timer(kind: str) -> int:
    actx = zmq.asyncio.Context()
    ctx = zmq.Context()
    server_pub, server_sec = zmq.curve_keypair()
    node = ctx.socket(zmq.ROUTER)
    node.linger = 0
    node.curve_server = True
    node.curve_publickey, node.curve_secretkey = server_pub, server_sec
    endpoint = f"tcp://127.0.0.1:{node.bind_to_random_port('tcp://127.0.0.1')}"
    socks: list[zmq.Socket[bytes]] = []
    kept = []
    wait_s = 0.6  # six beats of 0.1 s
    for _ in range(CONNECTIONS):
        if kind == "client":
            pub, sec = zmq.curve_keypair()
            made, _monitor = open_dealer(
                actx,
                ServerAddress(endpoint, server_pub.decode()),
                public_key=pub,
                secret_key=sec,
                beat_s=0.1,
                liveness=3,
            )
            kept.append((made, _monitor))  # a socket dropped is closed
            socks.append(zmq.Socket.shadow(made.underlying))
            continue
        sock = ctx.socket(zmq.DEALER)
        _keys(sock, server_pub)
        if kind == "bounded":
            sock.setsockopt(zmq.HEARTBEAT_IVL, 100)
            # Not given up on before the node goes away, however busy the machine.
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
            sock.setsockopt(zmq.RCVHWM, 10)
        else:
            link_heartbeats(sock)
            wait_s = 4.5  # its beat is every 2 s, its timeout 6 s
        sock.connect(endpoint)
        socks.append(sock)
    rids = []
    for sock in socks:
        sock.send(b"hello")
        rids.append(node.recv_multipart()[0])
    for _ in range(FRAMES):
        for rid in rids:
            node.send_multipart([rid, b"x" * 512])
    # Sent, and queues that have a bound full; before the client's own
    # beats give up on its node (0.3 s), had its queue stopped at a bound.
    time.sleep(0.05 if kind == "client" else 0.3)
    node.close(0)  # the node goes away; no socket has read anything
    time.sleep(wait_s)  # their heartbeat timers fire meanwhile
    return sum(_read_all(sock) for sock in socks)


def ping(kind: str) -> int:
    actx = zmq.asyncio.Context()
    ctx = zmq.Context()
    return sum(_ping_once(kind, actx, ctx) for _ in range(ROUNDS))


def _ping_once(kind: str, actx: zmq.asyncio.Context, ctx: zmq.Context[zmq.Socket[bytes]]) -> int:
    server_pub, server_sec = zmq.curve_keypair()
    kept: object = None
    if kind == "link":
        made, endpoint = bind_link(actx, server_pub, server_sec, "tcp://127.0.0.1:*")
        sock: zmq.Socket[bytes] = zmq.Socket.shadow(made.underlying)
        kept = made
    elif kind == "node":
        sock, kept = open_router(
            actx, "tcp://127.0.0.1:*", secret_key=server_sec, public_key=server_pub
        )
        sock.linger = 0
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    else:
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = server_pub, server_sec
        sock.setsockopt(zmq.RCVHWM, 10)
        endpoint = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
    peer = ctx.socket(zmq.DEALER)
    _keys(peer, server_pub)
    peer.setsockopt(zmq.HEARTBEAT_IVL, 1)  # PINGs among its frames
    peer.setsockopt(zmq.RCVHWM, 1)
    peer.setsockopt(zmq.RCVBUF, 4096)
    peer.connect(endpoint)
    peer.send(b"hello")
    rid = sock.recv_multipart()[0]
    for _ in range(FILL if kind != "bounded" else 0):  # what a bounded queue of theirs took
        peer.send(b"y" * 64)
    for _ in range(250):
        peer.send(b"y" * 64)
        time.sleep(0.0015)
    with contextlib.suppress(zmq.ZMQError):  # (gone already: its beats timed out)
        for _ in range(50):  # what the peer never reads: its close resets the connection
            sock.send_multipart([rid, b"z" * 4000], zmq.NOBLOCK)
    time.sleep(0.2)
    peer.close(0)
    time.sleep(0.3)
    n = _read_all(sock)
    sock.close(0)
    del kept
    return n


if __name__ == "__main__":
    case, kind = sys.argv[1], sys.argv[2]
    print({"timer": timer, "ping": ping}[case](kind), flush=True)
