"""Connections that never speak, and the routing ids libzmq hands out.

libzmq's ROUTER (4.3.5) takes the routing id a peer names in its
handshake, and gives a peer that names none an id of its own: a zero byte
and a 32-bit counter. It does not check that id against the ones peers
named, and inserting a duplicate aborts the process. So a peer that names
the id the counter hands out next kills the node when the next peer that
names none connects. Nothing in libzmq's options or its ZAP request (whose
identity frame is the ROUTER's own) lets the node refuse such a name, and
no CURVE key is needed to name one. What the node does:

* **The counter's start is unpredictable** (`seed_rand`): libzmq draws it
  from the C library's `rand()`, which nothing seeded, so every node
  started at the same value (0x6b8b4567), and a script could name the ids
  a fresh node hands out next. It is now seeded from the OS's random
  source before the ROUTER is made: a peer must name ids blind, 1 in
  2^32 each.
* **A connection that is no user's is closed** (`Silent`): one that is
  not a user's `SILENT_S` after it was accepted (a client says `hello` as
  soon as its CURVE handshake is done, and registers at once if its key
  is not known; libzmq gives up on a handshake after 10 s) is shut down,
  whether it sent nothing or only pings. Named ids cannot pile up in
  such connections waiting for the counter, nor can throwaway keys hold
  descriptors; a user's connection is bounded by the per-user and rate
  limits.

What is left (docs/security.md, "Routing ids"): the counter reaching an id
a live connection named, about (ids named and alive) x (connections naming
none) / 2^32; an attacker holding many connections and opening many more
can still get there (a fix needs libzmq to check the ids it makes).

This module must never read or write the ROUTER (the reactor does), nor
a socket: it says which connections to close, and server/liveness.py shuts
their TCP sockets down (`curvechat.tcpfd`), and libzmq closes each as if
the peer had.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Container

SILENT_S = 15.0
"""How long a connection may stay without a whole message after it was accepted."""


def seed_rand() -> bool:
    """Seed the C library's `rand()` (libzmq's source for the first id it
    hands out) from the OS's random source; False if there is no such C
    function to call."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.srand(ctypes.c_uint(int.from_bytes(os.urandom(4), "big")))
    except (OSError, AttributeError):
        return False
    return True


class Silent:
    """The connections accepted that have not spoken yet, by fd (sans-IO:
    the caller says what happened and when)."""

    def __init__(self, limit_s: float = SILENT_S) -> None:
        self.limit_s = limit_s
        self._since: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._since)

    def accepted(self, fd: int, now: float) -> None:
        self._since[fd] = now

    def closed(self, fd: int) -> None:
        self._since.pop(fd, None)

    def crowded(self, limit: int) -> list[int]:
        """The oldest fds past the `limit` newest (forgotten here)."""
        out = list(self._since)[: max(len(self._since) - limit, 0)]
        for fd in out:
            del self._since[fd]
        return out

    def overdue(self, spoke: Container[int], now: float) -> list[int]:
        """The fds silent for longer than the limit (forgotten here); those
        in `spoke` (their session has spoken) are forgotten too."""
        out = []
        for fd, since in list(self._since.items()):
            if fd in spoke:
                del self._since[fd]
            elif now - since > self.limit_s:
                del self._since[fd]
                out.append(fd)
        return out
