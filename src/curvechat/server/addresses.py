"""How many connections one address may hold on a node's client port.

What it is for: every connection costs the node about 40 KB (most of it
libzmq's) and a descriptor, whoever opens it; keys are free, and a
connection that is no user's is closed only 15 s after it was accepted
(`server/silent.py`). So one host opening connections as fast as it can
held tens of thousands at once, and with them the node's memory. Past
`limit` connections from one address, a new one is shut down as soon as it
is accepted, before its handshake costs anything more.

An address is an IPv4 address, or an IPv6 /64 (one host gets a whole /64
to pick from; a link-local address counts as itself, since every host on
the link shares its /64); an IPv4 address mapped into IPv6 counts as
itself. Loopback addresses are not counted unless asked (a TLS
terminator, a tunnel or a proxy on the node's host puts every client on
127.0.0.1), and when they are, all of 127.0.0.0/8 is one address.

Sans-IO: the caller says which connection (its fd) was accepted from
where, and which closed; the fd of a connection whose close was not seen
is counted again for whoever was accepted on it next.

What it must never do: refuse a connection for anything but its address's
count, or touch a socket.
"""

from __future__ import annotations

import ipaddress

__all__ = ["DEFAULT_PER_ADDRESS", "PerAddress", "address_key"]

DEFAULT_PER_ADDRESS = 1024
"""Connections one address may hold at once unless the node is told
otherwise: a user holds at most 16, so this is 64 users behind one NAT."""


def address_key(peer: object, loopback: bool, v6_prefix: int = 64) -> str | None:
    """What `peer` (a socket's `getpeername()`) is counted as, or None if
    it is not counted (loopback, unless `loopback`; not an IP address). An
    IPv6 address counts as its network of `v6_prefix` bits."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    try:
        ip = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:  # one host, whichever of its loopback addresses it takes
        return ("127.0.0.0/8" if ip.version == 4 else "::1") if loopback else None
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_link_local:
        return str(ipaddress.IPv6Network((ip, v6_prefix), strict=False))
    return str(ip)  # (a link-local /64 is every host's on the link: the address)


class PerAddress:
    """Connections per address (see the module docstring)."""

    def __init__(self, limit: int = DEFAULT_PER_ADDRESS, *, loopback: bool = False) -> None:
        if limit < 1:
            raise ValueError("the connections per address must be at least 1")
        self.limit = limit
        self.loopback = loopback
        self._counts: dict[str, int] = {}
        self._by_fd: dict[int, str] = {}

    def __len__(self) -> int:
        """Connections counted."""
        return len(self._by_fd)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def accepted(self, fd: int, peer: object) -> str | None:
        """Count connection `fd` from `peer`; None if it may stay, else the
        address that holds too many already (the connection is not counted)."""
        self.closed(fd)  # an fd reused before its close was seen
        key = address_key(peer, self.loopback)
        if key is None:
            return None
        held = self._counts.get(key, 0)
        if held >= self.limit:
            return key
        self._counts[key] = held + 1
        self._by_fd[fd] = key
        return None

    def closed(self, fd: int) -> None:
        key = self._by_fd.pop(fd, None)
        if key is None:
            return
        left = self._counts[key] - 1
        if left:
            self._counts[key] = left
        else:
            del self._counts[key]
