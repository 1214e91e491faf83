"""The libzmq floor of an idle connection: a bare CURVE ROUTER (the node's
socket options, heartbeats and I/O threads, no Python state per connection)
with N idle DEALERs (heartbeating as the client does, TTL included) connected from other
processes; prints the server's RSS per connection, and its CPU over one
period of its heartbeats once every connection has begun them.

    python -m bench.idle_floor [N=10000] [PROCESSES=4] [--no-heartbeats] [--zap] [--no-curve]
        [--heartbeat IVL:TIMEOUT]

`--zap`: the server authenticates through ZAP as the node does (a handler
that admits any CURVE key); libzmq then keeps a ZAP pipe per connection.
`--no-curve`: plain connections, to tell CURVE's share from the rest.
`--heartbeat 10000:30000`: the server heartbeats too, with this interval and
timeout (ms), as the node did before it left liveness to the clients' TTL
(`server/router.py`), to compare their CPU.
What the node's idle connection costs beyond the `--zap` figure is its own
(`make bench`, "idle" line; `python -m bench.idle_node` for its Python side).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from bench.common import proc_cpu_seconds, proc_mem, raise_fd_limit
from curvechat.client.connection import HEARTBEAT_S
from curvechat.client.dealer import set_heartbeats
from curvechat.server import router


def server(
    q: mp.Queue[int], pub: bytes, sec: bytes, heartbeat: tuple[int, int], zap: bool, curve: bool
) -> None:
    ctx = zmq.Context(io_threads=router.IO_THREADS)
    s = ctx.socket(zmq.ROUTER)
    if curve:
        s.curve_server = True
        s.curve_secretkey = sec
        s.curve_publickey = pub
    if zap:
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        s.zap_domain = b"curvechat"
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    s.setsockopt(zmq.SNDHWM, 10000)
    s.setsockopt(zmq.RCVHWM, 0)  # as the node (server/router.py)
    ivl, timeout = heartbeat
    if ivl:
        s.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
        s.setsockopt(zmq.HEARTBEAT_TTL, ivl + timeout)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    q.put(port)
    seen = set()
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    while True:
        if poller.poll(200):
            rid, body = s.recv_multipart()
            if body == b"quit":
                break
            seen.add(rid)
            s.send_multipart([rid, b"ok"])


def clients(
    n: int,
    endpoint: str,
    pub: bytes,
    done: mp.Queue[int],
    curve: bool = True,
    hello: bytes = b"hello",
    step: int = 0,
) -> None:
    """N idle DEALERs (fresh CURVE keys, heartbeating): each sends `hello`
    and waits for one answer, `step` handshakes at a time (0: all at once);
    then they stay connected until the process is killed."""
    raise_fd_limit()
    ctx = zmq.Context(io_threads=1)
    ctx.set(zmq.MAX_SOCKETS, n + 100)
    socks: list[zmq.Socket[bytes]] = []
    step = step or n
    for start in range(0, n, step):
        chunk = []
        for _ in range(min(step, n - start)):
            cp, cs = zmq.curve_keypair()
            d = ctx.socket(zmq.DEALER)
            if curve:
                d.curve_serverkey, d.curve_publickey, d.curve_secretkey = pub, cp, cs
            set_heartbeats(d, HEARTBEAT_S, 3)  # as the client
            d.setsockopt(zmq.LINGER, 0)
            d.connect(endpoint)
            d.send(hello)
            chunk.append(d)
        for d in chunk:
            d.recv()
        socks.extend(chunk)
    done.put(len(socks))
    time.sleep(3600)


def main() -> None:
    heartbeat = (0, 0)  # as the node: the clients' TTL is its liveness check (server/router.py)
    if "--heartbeat" in sys.argv:
        ivl, timeout = sys.argv[sys.argv.index("--heartbeat") + 1].split(":")
        heartbeat = (int(ivl), int(timeout))
    if "--no-heartbeats" in sys.argv:
        heartbeat = (0, 0)
    zap = "--zap" in sys.argv
    curve = "--no-curve" not in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--") and ":" not in a]
    n = int(args[0]) if args else 10000
    procs = int(args[1]) if len(args) > 1 else 4
    raise_fd_limit()
    pub, sec = zmq.curve_keypair()
    q: mp.Queue[int] = mp.Queue()
    srv = mp.Process(target=server, args=(q, pub, sec, heartbeat, zap, curve), daemon=True)
    srv.start()
    port = q.get()
    time.sleep(0.5)
    assert srv.pid is not None
    before = proc_mem(srv.pid)["VmRSS"]
    done: mp.Queue[int] = mp.Queue()
    cps = [
        mp.Process(
            target=clients,
            args=(n // procs, f"tcp://127.0.0.1:{port}", pub, done, curve),
            daemon=True,
        )
        for _ in range(procs)
    ]
    t0 = time.monotonic()
    for p in cps:
        p.start()
    total = sum(done.get() for _ in cps)
    t1 = time.monotonic()
    # Steady state: a server's heartbeats (--heartbeat) begin one interval
    # after each handshake; then one whole interval, in which it pings every
    # connection (12 s without: the clients' heartbeats, every 5 s).
    period = max(heartbeat[0] / 1000, 12.0)
    time.sleep(max(2.0, period - (time.monotonic() - t0)))
    after = proc_mem(srv.pid)["VmRSS"]
    cpu0, w0 = proc_cpu_seconds(srv.pid), time.monotonic()
    time.sleep(period)
    cpu_pct = 100 * (proc_cpu_seconds(srv.pid) - cpu0) / (time.monotonic() - w0)
    kind = ("CURVE" if curve else "plain") + (" (ZAP)" if zap else "")
    beats = f"heartbeat {heartbeat[0]}:{heartbeat[1]} ms" if heartbeat[0] else "no heartbeat"
    print(
        f"{total} idle {kind} connections in {t1 - t0:.1f} s; bare ROUTER RSS "
        f"{before / 2**20:.1f} -> {after / 2**20:.1f} MB = "
        f"{(after - before) / total:,.0f} B per connection; its CPU ({beats}) "
        f"over {period:.0f} s: {cpu_pct:.1f} % of a core"
    )
    for p in cps:
        p.kill()
    srv.kill()


if __name__ == "__main__":
    main()
