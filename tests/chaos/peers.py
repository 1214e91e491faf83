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

import threading
from collections.abc import Iterable

from .proxy import Proxy, ProxyHub


class PeerNet:
    """Which etcd peer links are cut: a set of member pairs, changed from any
    thread and told to the proxies' process (proxyd.py), which reads each
    peer connection's first request head to find who dialled."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self._cut: set[frozenset[str]] = set()
        self._lock = threading.Lock()
        self._hubs: list[ProxyHub] = []
        self._urls: dict[str, str] = {}  # advertised peer URL -> member name

    def serve(self, hub: ProxyHub, urls: dict[str, str]) -> None:
        """The peer proxies on `hub` stand for this net; `urls` names each
        member's advertised (proxied) peer URL."""
        with self._lock:
            self._hubs.append(hub)
            self._urls.update(urls)
            self._tell()

    def cut(self, a: str, b: str) -> None:
        with self._lock:
            self._cut.add(frozenset((a, b)))
            self._tell()

    def isolate(self, name: str) -> None:
        """Cut `name` off from every other member."""
        with self._lock:
            self._cut.update(frozenset((name, o)) for o in self.names if o != name)
            self._tell()

    def heal(self) -> None:
        with self._lock:
            self._cut.clear()
            self._tell()

    @property
    def unidentified(self) -> int:
        """Connections whose sender no header named."""
        return sum(int(hub.request(op="unidentified")["n"]) for hub in self._hubs)

    def _tell(self) -> None:
        cut = [sorted(pair) for pair in self._cut]
        for hub in self._hubs:
            hub.request(op="net", names=self.names, cut=cut, urls=self._urls)


class PeerProxy(Proxy):
    """The proxy in front of one member's peer port."""

    def __init__(self, hub: ProxyHub, net: PeerNet, member: str, target_port: int) -> None:
        super().__init__(hub, f"peers->{member}", target_port)
        self.net = net
        self.member = member


def add_peer_proxies(
    hub: ProxyHub, net: PeerNet, members: list[tuple[str, int]]
) -> list[PeerProxy]:
    """One `PeerProxy` per (member name, peer port); each knows every
    member's advertised (proxied) peer URL."""
    proxies: list[PeerProxy] = []
    urls: dict[str, str] = {}
    for name, port in members:
        proxy = PeerProxy(hub, net, name, port)
        hub.start(proxy)
        proxies.append(proxy)
        urls[f"http://{proxy.endpoint}"] = name
    net.serve(hub, urls)
    return proxies
