"""The fault-injecting proxy itself, against a plain echo server: each mode
does what the nemeses rely on."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from chaos.proxy import Proxy, ProxyHub


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub = ProxyHub()
    try:
        yield hub.add("echo", server.server_address[1])
    finally:
        hub.close()
        server.shutdown()
        server.server_close()


def dial(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=3)


def roundtrip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(100)


def test_pass_and_latency(proxy: Proxy) -> None:
    with dial(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        proxy.set(latency=0.2)
        t0 = time.monotonic()
        assert roundtrip(sock) == b"ping"
        assert time.monotonic() - t0 >= 0.4  # both directions delayed


def test_blackhole_is_silent_and_heal_resets(proxy: Proxy) -> None:
    with dial(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        proxy.set(mode="blackhole")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            roundtrip(sock)
        proxy.heal()
        sock.settimeout(3)
        with pytest.raises(ConnectionResetError):  # bytes were lost: the stream is dead
            roundtrip(sock)
            roundtrip(sock)
    with dial(proxy) as sock:
        assert roundtrip(sock) == b"ping"


def test_refuse_and_cut(proxy: Proxy) -> None:
    with dial(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        assert proxy.cut() == 1
        with pytest.raises(ConnectionResetError):
            roundtrip(sock)
    proxy.set(mode="refuse")
    # reset at connect or at first use
    with pytest.raises((ConnectionResetError, BrokenPipeError)), dial(proxy) as sock:
        roundtrip(sock)
        roundtrip(sock)
    proxy.heal()
    with dial(proxy) as sock:
        assert roundtrip(sock) == b"ping"


def test_a_target_that_never_accepts_stalls_no_other_proxy(proxy: Proxy) -> None:
    """Every connect is non-blocking: connections to a target whose backlog
    is full (a paused node's, say) wait, and the other proxies carry on."""
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)  # never accepted: after a connection or two, SYNs are dropped
    other = proxy.hub.add("stuck", stuck.getsockname()[1])
    dialled = [socket.create_connection(("127.0.0.1", other.port), timeout=3) for _ in range(8)]
    try:
        for sock in dialled:
            sock.sendall(b"waiting")
        t0 = time.monotonic()
        with dial(proxy) as sock:
            assert roundtrip(sock) == b"ping"
        assert time.monotonic() - t0 < 1.0
        assert other.cut() == 8
    finally:
        for sock in dialled:
            sock.close()
        stuck.close()
