"""A connection that sends without waiting for its answers is shut down
(server/reactor.py `FLOOD_CUT`): the node's socket takes every frame in
(curvechat/heartbeats.py), so this is what keeps such a sender from holding
the reactor, and libzmq's queue, for as long as it sends. A real node, raw
CURVE sockets on loopback."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from curvechat.crypto.identity import Identity
from curvechat.protocol import encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.server.reactor import FLOOD_CUT

from support.raw import RawClient
from support.servers import ServerProcess


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "node", extra_args=("--rate-conn", "50")).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


def _flooder(ctx: zmq.Context[zmq.Socket[bytes]], connect: str) -> zmq.Socket[bytes]:
    addr = parse_connect(connect)[0]
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey = addr.server_key.encode()
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.setsockopt(zmq.RECONNECT_IVL, -1)  # once shut down, it stays so
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)  # reads its end of the connection to the close
    sock.connect(addr.endpoint)
    return sock


def _metric(node: ServerProcess, name: str) -> float:
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_connection_that_does_not_wait_for_its_answers_is_shut_down(
    node: ServerProcess,
) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    honest = RawClient(ctx, node.connect, Identity.generate("grace"))
    sock = _flooder(ctx, node.connect)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        ping = encode_request(1, m.Ping(t=1))
        for _ in range(3 * FLOOD_CUT):  # at 50/s, all but the first hundred refused
            sock.send(ping)
        assert monitor.poll(20_000), "the flooding connection was not shut down"
        assert parse_monitor_message(monitor.recv_multipart())["event"] == zmq.EVENT_DISCONNECTED
        assert _metric(node, 'curvechat_auth_failures_total{reason="flood"}') == 1.0
        # One that waits for its answers is served all along, and never cut.
        for t in range(20):
            pong = honest.request(m.Ping(t=t))
            assert isinstance(pong, m.Pong)
            time.sleep(0.03)
        assert _metric(node, 'curvechat_auth_failures_total{reason="flood"}') == 1.0
        assert "flood_cut" in node.log()
    finally:
        monitor.close(0)
        sock.close(0)
        honest.close()
        ctx.destroy(linger=0)
