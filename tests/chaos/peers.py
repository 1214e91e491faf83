"""Proxies on etcd's peer (Raft) links, so that etcd members can be
partitioned from each other.

Each member advertises a proxy in front of its peer port instead of the port
itself, so every connection another member opens to it goes through that
proxy. One proxy serves every member that dials it, so to cut one link (and
not all of the member's links) the proxy must know who dialled: etcd's peer
requests are HTTP, and each names its sender's advertised peer URLs in an
``X-PeerURLs`` header (and its member id in ``X-Server-From``). The proxy
reads the first request's header block, finds the dialler, and drops the
connection's bytes while the link between the two members is cut (a silent
partition, as `Proxy` does in ``blackhole`` mode). A connection whose sender
the proxy cannot tell (etcd's version probes carry no such header) is dropped
only while its target is cut from every other member.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterable

from .proxy import Proxy, ProxyHub

HEAD_LIMIT = 16384
HEAD_TIMEOUT_S = 5.0
_PEER_URLS = re.compile(rb"(?im)^x-peerurls:\s*(\S+)\s*$")


class PeerNet:
    """Which etcd peer links are cut: a set of member pairs, read by the
    proxies' loop and changed from any thread."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self._cut: set[frozenset[str]] = set()
        self._lock = threading.Lock()
        self.unidentified = 0  # connections whose sender no header named

    def cut(self, a: str, b: str) -> None:
        with self._lock:
            self._cut.add(frozenset((a, b)))

    def isolate(self, name: str) -> None:
        """Cut `name` off from every other member."""
        for other in self.names:
            if other != name:
                self.cut(name, other)

    def heal(self) -> None:
        with self._lock:
            self._cut.clear()

    def is_cut(self, a: str, b: str) -> bool:
        with self._lock:
            return frozenset((a, b)) in self._cut

    def alone(self, name: str) -> bool:
        """Whether `name` is cut from every other member."""
        return all(self.is_cut(name, o) for o in self.names if o != name)


class PeerProxy(Proxy):
    """The proxy in front of one member's peer port."""

    def __init__(self, hub: ProxyHub, net: PeerNet, member: str, target_port: int) -> None:
        super().__init__(hub, f"peers->{member}", target_port)
        self.net = net
        self.member = member
        self.by_url: dict[bytes, str] = {}  # advertised peer URL -> member name

    async def _identify(self, reader: asyncio.StreamReader) -> tuple[str | None, bytes]:
        head = b""
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, OSError):
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    head += chunk
        found = _PEER_URLS.search(head.split(b"\r\n\r\n", 1)[0])
        if found:
            for url in found.group(1).split(b","):
                src = self.by_url.get(url.rstrip(b"/"))
                if src is not None:
                    return src, head
        self.net.unidentified += 1
        return None, head

    def _blocked(self, src: str | None) -> bool:
        if src is None:
            return self.net.alone(self.member)
        return self.net.is_cut(src, self.member)


def add_peer_proxies(
    hub: ProxyHub, net: PeerNet, members: list[tuple[str, int]]
) -> list[PeerProxy]:
    """One `PeerProxy` per (member name, peer port); each knows every
    member's advertised (proxied) peer URL."""
    proxies: list[PeerProxy] = []
    for name, port in members:
        proxy = PeerProxy(hub, net, name, port)
        hub.start(proxy)
        proxies.append(proxy)
    urls = {f"http://{p.endpoint}".encode(): p.member for p in proxies}
    for proxy in proxies:
        proxy.by_url = urls
    return proxies
