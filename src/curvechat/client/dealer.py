"""The client's socket to one node: a DEALER with CURVE, ZMTP heartbeats and
a monitor, and what each monitor event means for the connection.

This module must never send or read a request: `nodesocket` does, on the
socket made here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from curvechat.client import servers as sv
from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.heartbeats import beat
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import MAX_REPLY_BYTES

MONITORED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)

LostHandler = Callable[[str, str], None]
"""(reason, kind: one of `servers.LOST`, `REFUSED`, `AUTH`, `KEY_MISMATCH`)."""


def open_dealer(
    ctx: zmq.asyncio.Context,
    addr: ServerAddress,
    *,
    public_key: bytes,
    secret_key: bytes,
    beat_s: float,
    liveness: int,
) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    """A DEALER connecting to `addr`, and its monitor socket. libzmq drops
    the peer after `liveness` heartbeats of `beat_s` go unanswered, and asks
    the node to drop us when no whole message of ours came for twice that
    (the TTL: the node's only liveness check of its clients, server/router.py)."""
    sock = ctx.socket(zmq.DEALER)
    sock.ipv6 = True  # a node may listen on an IPv6 address (tcp://[::1]:7700)
    sock.curve_serverkey = addr.server_key.encode()
    sock.curve_publickey = public_key
    sock.curve_secretkey = secret_key
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES + 4096)
    set_heartbeats(sock, beat_s, liveness)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    monitor = sock.get_monitor_socket(MONITORED)
    sock.connect(addr.endpoint)
    return sock, monitor


TTL_MAX_MS = 65_500
"""ZMTP carries a TTL in deciseconds, but libzmq 4.3 turns it into
milliseconds in 16 bits on the receiving side: a TTL over 65.5 s wraps to
a short one there, and the node would drop a healthy client."""


def set_heartbeats(sock: zmq.Socket[Any], beat_s: float, liveness: int) -> None:
    """The client's ZMTP heartbeats on `sock`: every `beat_s`, the peer
    dropped after `liveness` of them go unanswered, and the TTL they carry.
    The inbound queue is unbounded (`heartbeats`): what bounds it is the
    node's flow control, which pushes at most its window of unconfirmed
    bytes to a client (server/flow.py), and the reader, which reads it to
    the end and cuts a node that sends past that (`nodesocket`, `inflow`)."""
    beat(
        sock,
        every_ms=int(beat_s * 1000),
        timeout_ms=int(beat_s * liveness * 1000),
        ttl_ms=heartbeat_ttl_ms(beat_s, liveness),
    )


def heartbeat_ttl_ms(beat_s: float, liveness: int) -> int:
    """The TTL our heartbeats carry: twice the silence we allow the node, so
    that a large frame on a slow uplink (256 KiB: 21 s at 100 kbit/s, and only
    a whole message counts) is not taken for a dead client; at least 100 ms
    (less is 0: no TTL) and at most TTL_MAX_MS."""
    return max(100, min(int(beat_s * liveness * 2 * 1000), TTL_MAX_MS))


def lost_by(event: int, connected: bool) -> tuple[str, str] | None:
    """(reason, kind) when a monitor event ends the attempt, else None."""
    if event == zmq.EVENT_CONNECT_RETRIED and not connected:
        # libzmq retries a refused TCP connect by itself, forever: nothing
        # listens there, so this attempt is over now.
        return "connection refused", sv.REFUSED
    if event == zmq.EVENT_DISCONNECTED:
        return "connection closed", sv.LOST
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "the server's authentication refused this client", sv.AUTH
    if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
        return "CURVE handshake failed (wrong server key?)", sv.KEY_MISMATCH
    return None


async def watch_monitor(monitor: zmq.asyncio.Socket, on_lost: LostHandler) -> None:
    """Read monitor events until cancelled, telling `on_lost` of each that
    ends the attempt; closes the monitor socket."""
    connected = False
    try:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            connected = connected or event == zmq.EVENT_CONNECTED
            lost = lost_by(event, connected)
            if lost is not None:
                on_lost(*lost)
    finally:
        monitor.close(linger=0)


def stop_monitor(sock: zmq.asyncio.Socket) -> None:
    """Stop a socket's monitor; call it while the monitor's reader still
    reads. libzmq's I/O thread sends monitor events blocking, under a lock
    that disable_monitor() and close() take: once the reading end is closed,
    one more event (the socket reconnecting to a flapping node) blocks it
    for good, and the next call hangs the whole process, GIL held."""
    with contextlib.suppress(zmq.ZMQError):
        sock.disable_monitor()


def failure_kind(exc: Exception, lost_kind: str | None) -> str:
    """The kind (`servers.*`) of a failed attempt that ended with `exc`;
    `lost_kind` is what the monitor said, if the socket was lost."""
    if isinstance(exc, ServerRefused) and exc.code == sv.DRAINING:
        return sv.DRAINING
    if isinstance(exc, NotConnected) and lost_kind is not None:
        return lost_kind
    return sv.TIMEOUT if isinstance(exc, RequestTimeout) else sv.LOST
