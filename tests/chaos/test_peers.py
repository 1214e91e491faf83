"""The etcd peer-link proxies against an echo server: a connection is
told apart by the sender its first HTTP request names, and only the links
that are cut drop their bytes."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from chaos.peers import PeerNet, PeerProxy, add_peer_proxies
from chaos.proxy import ProxyHub
from chaos.test_proxy import Echo


@pytest.fixture
def peers() -> Iterator[tuple[PeerNet, list[PeerProxy]]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub = ProxyHub()
    net = PeerNet(["m0", "m1", "m2"])
    port = server.server_address[1]
    try:
        yield net, add_peer_proxies(hub, net, [(m, port) for m in net.names])
    finally:
        hub.close()
        server.shutdown()
        server.server_close()


def _request(proxies: list[PeerProxy], to: int, sender: int | None) -> socket.socket:
    """A connection to member `to`'s proxy whose first request names `sender`."""
    sock = socket.create_connection(("127.0.0.1", proxies[to].port), timeout=1)
    header = f"X-PeerURLs: http://{proxies[sender].endpoint}\r\n" if sender is not None else ""
    sock.sendall(f"GET /raft/stream/message/1 HTTP/1.1\r\n{header}\r\n".encode())
    return sock


def _echoes(sock: socket.socket) -> bool:
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(1000)
            if not chunk:
                return False
            data += chunk
        return True
    except OSError:  # timed out: the bytes were dropped
        return False


def test_only_the_links_of_the_isolated_member_are_cut(
    peers: tuple[PeerNet, list[PeerProxy]],
) -> None:
    net, proxies = peers
    with _request(proxies, 0, 1) as sock:
        assert _echoes(sock)
    net.isolate("m2")
    for to, sender, through in [(0, 1, True), (0, 2, False), (2, 1, False), (1, 0, True)]:
        with _request(proxies, to, sender) as sock:
            assert _echoes(sock) is through, (to, sender)
    # A request that names no sender is dropped only on the way to a member
    # cut off from every other.
    for to, through in [(2, False), (0, True)]:
        with _request(proxies, to, None) as sock:
            assert _echoes(sock) is through, to
    assert net.unidentified == 2
    net.heal()
    with _request(proxies, 2, 0) as sock:
        assert _echoes(sock)
