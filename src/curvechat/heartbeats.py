"""ZMTP heartbeats on a socket, and the inbound queue they ask for.

What it is for: the client's socket to its node and both ends of the node
link beat (libzmq sends PINGs, and drops a peer that answers none). libzmq
4.3.5, the one pyzmq's wheels carry, aborts the whole process
(``Assertion failed: !_io_error (src/stream_engine_base.cpp:310)``) when a
connection whose inbound queue was full, so that libzmq had stopped reading
it, fails (the peer reset it or went away) and, before the application has
read that queue down, the socket's heartbeat timer fires, or a PING of the
peer's is read from the bytes libzmq had taken past the full queue: both
write to the failed connection. The second needs no beat of the socket's
own, only a peer that beats. It is libzmq's bug (its issues 3937 and 4364),
and its own workaround is the one used here: a socket that beats, or whose
peer beats, takes every frame in (RCVHWM 0), so libzmq never stops reading
it and never meets that state. What bounds that queue instead is said where
each socket is made (for the client, the node's flow control, which the
reader holds the node to; the other node's windows for the link; the
reactor's reading for the node's clients, server/router.py).

docs/reliability.md, F15, has the failure; `tests/test_heartbeats.py` the
sockets that aborted, and what they live through now.

The peer-to-peer sockets (client/peer) take every frame in too, as a
member may beat; what bounds them is the listener's intake
(client/peer/intake.py) and the link's watch for frames it did not ask for.

This module must never be used on a socket whose inbound queue is a bound
the process relies on against a hostile peer: it lifts that bound.
"""

from __future__ import annotations

from typing import Any

import zmq


def beat(sock: zmq.Socket[Any], *, every_ms: int, timeout_ms: int, ttl_ms: int = 0) -> None:
    """Heartbeats on `sock` every `every_ms`, the peer dropped after
    `timeout_ms` without an answer, `ttl_ms` (0: none) asked of the peer;
    and no bound on the inbound queue (above)."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, every_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
    if ttl_ms:
        sock.setsockopt(zmq.HEARTBEAT_TTL, ttl_ms)
    sock.setsockopt(zmq.RCVHWM, 0)
