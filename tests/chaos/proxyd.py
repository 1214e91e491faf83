"""The chaos suite's TCP proxies, all in one process of their own: one epoll
loop, no asyncio, no thread. `proxy.py` starts it and drives it over its
stdin and stdout (one JSON object a line each way); what each mode does is
said there.

Why a process and a bare loop: the proxies carry every byte of a chaos run
(clients, etcd, the node links, Raft) on the same two cores as the system
under test. Run on an asyncio loop in a thread of the workload's process,
they cost about 124 µs of CPU a chunk and shared the GIL with the workload's
engines; after a reconnect storm's cut they took most of a core for seconds
while the nodes waited for the connections to reach them. Here a chunk costs
about a quarter of that (`scripts/proxy_cost.py`: 33 µs on 2026-12-07;
`tests/chaos/test_proxy.py` keeps the modes honest).

This module must never block on a socket (everything is non-blocking, a
connect too: a paused node's full backlog would hang every proxy), and
never read what it carries beyond the first request head of a peer link.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import random
import re
import select
import socket
import struct
import sys
import time
from collections import deque
from typing import Any

CHUNK = 65536
WRITE_HIGH = 1 << 20  # bytes buffered for one side before its peer is read no more
HEAD_LIMIT = 16384
HEAD_TIMEOUT_S = 5.0
_PEER_URLS = re.compile(rb"(?im)^x-peerurls:\s*(\S+)\s*$")
EOF = b""
READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


class Net:
    """Which etcd peer links are cut (pairs of member names)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.cut: set[frozenset[str]] = set()
        self.by_url: dict[bytes, str] = {}

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cut

    def alone(self, name: str) -> bool:
        return all(self.is_cut(name, o) for o in self.names if o != name)


class Side:
    __slots__ = ("ev", "fd", "out", "reading", "shut_after", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = bytearray()
        self.shut_after = False  # shut its write side once `out` is sent
        self.reading = True  # not at its end yet
        self.ev = 0  # what the epoll watches it for


class Link:
    """One proxied connection: the client's side and the upstream one, and
    per direction (0: client to upstream, 1: back) the chunks held back."""

    def __init__(self, proxy: Listener, client: socket.socket, up: socket.socket) -> None:
        self.proxy = proxy
        self.sides = (Side(client), Side(up))
        self.connected = False
        self.identified = proxy.member is None
        self.head = b""
        self.head_deadline = time.monotonic() + HEAD_TIMEOUT_S
        self.src: str | None = None
        self.queues: tuple[deque[tuple[float, bytes]], deque[tuple[float, bytes]]] = (
            deque(),
            deque(),
        )
        self.dropped = [False, False]
        self.timer_at = [0.0, 0.0]  # the due time a timer is set for, per direction
        self.eofs = 0
        self.closed = False


class Listener:
    def __init__(self, number: int, name: str, target: int, member: str | None) -> None:
        self.id = number
        self.name = name
        self.target = target
        self.member = member
        self.mode = "pass"
        self.latency = 0.0
        self.loss = 0.0
        self.stalls = 0
        self.unidentified = 0
        self.links: set[Link] = set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]


class Daemon:
    def __init__(self) -> None:
        self.ep = select.epoll()
        self.net = Net()
        self.proxies: dict[int, Listener] = {}
        self.by_lfd: dict[int, Listener] = {}
        self.by_fd: dict[int, tuple[Link, int]] = {}  # fd -> (link, side index)
        self.timers: list[tuple[float, int, Link]] = []
        self.control = b""
        self.ep.register(0, select.EPOLLIN)
        self.running = True

    # --- the loop ------------------------------------------------------------
    def run(self) -> None:
        while self.running:
            timeout = -1.0
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == 0:
                    self.on_control()
                elif fd in self.by_lfd:
                    self.on_accept(self.by_lfd[fd])
                elif fd in self.by_fd:
                    link, i = self.by_fd[fd]
                    if link.closed:
                        continue
                    if ev & select.EPOLLOUT:
                        self.on_writable(link, i)
                    if not link.closed and ev & READABLE:
                        self.on_readable(link, i)
            self.on_timers()

    def mask(self, link: Link, i: int) -> None:
        """Watch side `i` for what it needs now: reading while it is open and
        its peer's buffer is not full, writing while it has bytes to send
        (or, upstream, until its connect is done)."""
        side = link.sides[i]
        ev = 0
        if side.reading and (link.connected or i == 0) and len(link.sides[1 - i].out) <= WRITE_HIGH:
            ev |= select.EPOLLIN
        if side.out or (i == 1 and not link.connected):
            ev |= select.EPOLLOUT
        if ev != side.ev:
            side.ev = ev
            self.ep.modify(side.fd, ev)

    # --- control -------------------------------------------------------------
    def on_control(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.running = False
            return
        self.control += data
        while b"\n" in self.control:
            line, self.control = self.control.split(b"\n", 1)
            try:
                reply = self.command(json.loads(line))
            except Exception as exc:  # a harness bug: answer it, keep serving
                reply = {"error": repr(exc)}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "add":
            proxy = Listener(len(self.proxies) + 1, cmd["name"], cmd["target"], cmd.get("member"))
            self.proxies[proxy.id] = proxy
            self.by_lfd[proxy.sock.fileno()] = proxy
            self.ep.register(proxy.sock.fileno(), select.EPOLLIN)
            return {"id": proxy.id, "port": proxy.port}
        if op == "net":
            self.net.names = cmd["names"]
            self.net.cut = {frozenset(p) for p in cmd["cut"]}
            self.net.by_url = {u.encode(): m for u, m in cmd["urls"].items()}
            return {}
        if op == "unidentified":
            return {"n": sum(p.unidentified for p in self.proxies.values())}
        if op == "close":
            for proxy in self.proxies.values():
                self.reset_all(proxy)
                proxy.sock.close()
            self.running = False
            return {}
        proxy = self.proxies[cmd["id"]]
        if op == "set":
            if cmd.get("latency") is not None:
                proxy.latency = cmd["latency"]
            if cmd.get("loss") is not None:
                proxy.loss = cmd["loss"]
            if cmd.get("mode") is not None:
                proxy.mode = cmd["mode"]
                if proxy.mode == "refuse":
                    self.reset_all(proxy)
            return {}
        if op == "cut":
            return {"n": self.reset_all(proxy)}
        if op == "stalls":
            return {"n": proxy.stalls}
        raise ValueError(f"unknown op {op}")

    # --- connections ---------------------------------------------------------
    def on_accept(self, proxy: Listener) -> None:
        while True:
            try:
                client, _ = proxy.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, say: the next try may do
                return
            if proxy.mode == "refuse":
                _rst(client)
                continue
            client.setblocking(False)
            up = socket.socket()
            up.setblocking(False)
            for s in (client, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = up.connect_ex(("127.0.0.1", proxy.target))
            link = Link(proxy, client, up)
            proxy.links.add(link)
            for i, side in enumerate(link.sides):
                self.by_fd[side.fd] = (link, i)
            link.sides[0].ev, link.sides[1].ev = select.EPOLLIN, select.EPOLLOUT
            self.ep.register(client.fileno(), select.EPOLLIN)
            self.ep.register(up.fileno(), select.EPOLLOUT)
            if rc not in (0, errno.EINPROGRESS):
                self.reset(link)
            elif not link.identified:
                heapq.heappush(self.timers, (link.head_deadline, id(link), link))

    def on_writable(self, link: Link, i: int) -> None:
        side = link.sides[i]
        if i == 1 and not link.connected:
            if side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.reset(link)
                return
            link.connected = True
            self.mask(link, 1)
            self.flush(link, 0)
            return
        self.send_out(link, i)

    def on_readable(self, link: Link, i: int) -> None:
        side = link.sides[i]
        try:
            data = side.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.reset(link)
            return
        if not side.reading:  # a hang-up told again after its end was read
            return
        if not data:
            side.reading = False
            self.mask(link, i)
        if i == 0 and not link.identified:
            link.head += data
            if data and b"\r\n\r\n" not in link.head and len(link.head) < HEAD_LIMIT:
                return
            self.identify(link)
            if side.reading:
                return
            data = EOF
        self.chunk(link, i, data)

    def identify(self, link: Link) -> None:
        """Name who dialled a peer link from the head read so far (its first
        request's, or what came before the time ran out), then send the head
        on as the link's first chunk."""
        link.identified = True
        found = _PEER_URLS.search(link.head.split(b"\r\n\r\n", 1)[0])
        urls = found.group(1).split(b",") if found else []
        link.src = next((s for u in urls if (s := self.net.by_url.get(u.rstrip(b"/")))), None)
        if link.src is None:
            link.proxy.unidentified += 1
        head, link.head = link.head, b""
        if head:
            self.chunk(link, 0, head)

    def blocked(self, link: Link) -> bool:
        proxy = link.proxy
        if proxy.member is None:
            return proxy.mode == "blackhole"
        if link.src is None:
            return self.net.alone(proxy.member)
        return self.net.is_cut(link.src, proxy.member)

    def chunk(self, link: Link, i: int, data: bytes) -> None:
        """A chunk read from side `i` (EOF: b""), on its way to the other."""
        queue = link.queues[i]
        if data:
            if self.blocked(link):
                link.dropped[i] = True
                return
            if link.dropped[i]:  # healed after a partition dropped bytes: the stream is dead
                self.reset(link)
                return
            proxy = link.proxy
            delay = proxy.latency
            if proxy.loss and random.random() < proxy.loss:
                proxy.stalls += 1
                delay += random.uniform(0.2, 1.0)  # a retransmission timeout
        else:
            delay = 0.0
        queue.append((time.monotonic() + delay, data))
        self.flush(link, i)

    def flush(self, link: Link, i: int) -> None:
        """Hand side `i`'s due chunks, in order, to the other side."""
        if not link.connected:
            return
        queue, now = link.queues[i], time.monotonic()
        while queue and queue[0][0] <= now and not link.closed:
            _, data = queue.popleft()
            dest = link.sides[1 - i]
            if data:
                dest.out += data
            else:
                dest.shut_after = True
            self.send_out(link, 1 - i)
        if queue and not link.closed and link.timer_at[i] != queue[0][0]:
            link.timer_at[i] = queue[0][0]
            heapq.heappush(self.timers, (queue[0][0], id(link), link))

    def send_out(self, link: Link, j: int) -> None:
        """Send what side `j` has buffered, as much as its socket takes."""
        side = link.sides[j]
        if side.out:
            try:
                n = side.sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.reset(link)
                return
            del side.out[:n]
        if not side.out and side.shut_after:
            side.shut_after = False
            with contextlib.suppress(OSError):
                side.sock.shutdown(socket.SHUT_WR)
            link.eofs += 1
            if link.eofs == 2:
                self.close(link)
                return
        self.mask(link, j)
        if link.connected:
            self.mask(link, 1 - j)

    def on_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, link = heapq.heappop(self.timers)
            if link.closed:
                continue
            link.timer_at = [0.0, 0.0]
            if not link.identified and now >= link.head_deadline:
                self.identify(link)
            for i in (0, 1):
                self.flush(link, i)

    def reset_all(self, proxy: Listener) -> int:
        """Reset every connection of `proxy`; returns how many there were."""
        links = list(proxy.links)
        for link in links:
            self.reset(link)
        return len(links)

    def reset(self, link: Link) -> None:
        """Both sides closed with RST, as a dropped link or a dead host would."""
        self.close(link, rst=True)

    def close(self, link: Link, rst: bool = False) -> None:
        if link.closed:
            return
        link.closed = True
        link.proxy.links.discard(link)
        for side in link.sides:
            self.by_fd.pop(side.fd, None)
            with contextlib.suppress(OSError):
                self.ep.unregister(side.fd)
            if rst:
                _rst(side.sock)
            else:
                side.sock.close()


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


if __name__ == "__main__":
    Daemon().run()
