"""The node's ROUTER socket as libzmq makes it: the libzmq it refuses to run
on, the socket's options (CURVE, TCP keepalive, size and queue limits), its
monitor, and the ZAP provider that admits any well-formed key.

This module must never read from or write to the socket (the reactor does) nor touch
the store: a handshake is decided in memory, so a slow store cannot stall
new connections.
"""

from __future__ import annotations

import itertools

import zmq
import zmq.asyncio

from curvechat.protocol.errors import BindFailed
from curvechat.protocol.limits import MAX_FRAME_BYTES, libzmq_refusal
from curvechat.server.metrics import NodeMetrics
from curvechat.server.silent import seed_rand

_MONITORS = itertools.count()
"""Numbers the monitors' inproc names in this process."""

ZAP_DOMAIN = "curvechat"
# Liveness of client connections. The node sends no ZMTP heartbeats: each
# client's heartbeats (every 5 s) carry a TTL (30 s: client/dealer.py), and
# libzmq drops a connection from which no whole message came for that long.
# libzmq cancels a timer by walking its I/O thread's timers in expiry order
# up to it. A TTL timer is armed at each client heartbeat and cancelled at
# its next message, and being the oldest it is the first in that order: a
# walk of one step. The node's own pings armed a timeout timer that sat
# behind the heartbeat timers of all the other connections: at 10 s / 30 s,
# 10,000 idle connections kept libzmq's I/O threads 30 % of a core busy
# walking (70 % of their samples in std::_Rb_tree_increment), and a connect
# storm left their timers due together, so the walks came in bursts
# (docs/performance.md). A client that sets no TTL (older than this) is
# found dead only by TCP keepalive (the kernel's timers: a host gone or cut
# off, within KEEPALIVE_IDLE_S + 3 probes while nothing is queued to it;
# with data queued, when the kernel gives up retransmitting, minutes), not
# at all while its host lives (a stopped process); its session goes with
# the reaper, its libzmq connection stays.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTVL_S = 10
KEEPALIVE_CNT = 3
IO_THREADS = 2  # libzmq I/O threads: handshakes and heartbeats on both cores
MONITORED = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
)


def check_libzmq() -> None:
    """Refuse to run on a libzmq the protocol refuses (`limits.libzmq_refusal`)."""
    problem = libzmq_refusal(zmq.zmq_version_info(), zmq.has("curve"))
    if problem is not None:
        raise RuntimeError(f"{problem}; refusing to start")


class AllowKnownGood:
    """ZAP credentials provider: any well-formed CURVE key may connect (the key
    *is* the login; unknown keys may only register). Keys on the deny list are
    refused. Purely in memory: a slow store cannot stall handshakes."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.denied: set[bytes] = set()
        self._metrics = metrics

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.denied:
            self._metrics.handshakes.labels("denied").inc()
            return False
        return True


def binds_ipv6(bind: str) -> bool:
    """Whether a bind address names an IPv6 host (`tcp://[::1]:7700`, or
    `tcp://[::]:7700` for both families): only then is the socket's IPv6
    switched on, since with it on, libzmq reports an IPv4 address bound as
    IPv4-mapped (`tcp://[::ffff:127.0.0.1]:7700`), which the node advertises."""
    return "://[" in bind


def bind_or_close(sock: zmq.Socket[bytes] | zmq.asyncio.Socket, bind: str) -> None:
    """Bind `sock` to `bind`; if that fails, close it and raise BindFailed
    naming the address (an address in use is a person's mistake, not a bug)."""
    try:
        sock.bind(bind)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        why = (exc.strerror or str(exc)).split(" (addr=")[0]  # libzmq adds the address
        if "://" not in bind:
            why += " (give an endpoint: tcp://HOST:PORT)"
        raise BindFailed(f"cannot listen on {bind}: {why}") from exc


def open_router(
    ctx: zmq.asyncio.Context, bind: str, *, secret_key: bytes, public_key: bytes
) -> tuple[zmq.Socket[bytes], zmq.asyncio.Socket]:
    """The bound ROUTER (CURVE server, ZAP domain `ZAP_DOMAIN`) and the
    asyncio socket that reads its monitor."""
    # A plain socket: the reactor reads and writes it without a Future per
    # frame (the monitor socket made from the same context stays asyncio).
    seed_rand()  # the first routing id libzmq hands out, unpredictable (server/silent.py)
    sock: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.ROUTER)
    sock.ipv6 = binds_ipv6(bind)
    sock.curve_server = True
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public_key
    sock.zap_domain = ZAP_DOMAIN.encode()
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + 1024)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 10000)
    sock.setsockopt(zmq.SNDHWM, 10000)
    # Every frame taken in: libzmq aborts the process when a client whose
    # queue it had stopped reading resets its connection with a beat of its
    # own among the bytes read past the full queue (curvechat/heartbeats.py;
    # any client can do it on purpose). What bounds the queue instead is the
    # reactor, which reads it to the end at every turn and answers what a
    # connection sends past its rate with one refusal a frame.
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 1000)
    bind_or_close(sock, bind)
    return sock, open_monitor(ctx, sock, MONITORED)


def open_monitor(
    ctx: zmq.asyncio.Context, sock: zmq.Socket[bytes] | zmq.asyncio.Socket, events: int
) -> zmq.asyncio.Socket:
    """The asyncio socket that reads `sock`'s monitor events `events`."""
    # libzmq's I/O thread sends monitor events blocking: a bounded queue
    # that the event loop has not read yet would stall every connection.
    # The receiving end is unbounded (RCVHWM 0), as it is made here.
    # A name of its own: a socket made after another was closed may have the
    # old one's id, and libzmq may not have let the old name go yet.
    monitor_addr = f"inproc://curvechat-monitor-{next(_MONITORS)}"
    sock.monitor(monitor_addr, events)
    monitor = ctx.socket(zmq.PAIR)
    monitor.rcvhwm = 0
    monitor.connect(monitor_addr)
    return monitor
