"""Lightweight clients for the reconnect storm, run in their own process:
`python storm.py N CONNECT [CONNECT …]`.

Each is what the engine's connection does, minus the engine: a DEALER with
its own CURVE key pair, `hello` until welcomed, an app-level ping, and on a
dropped connection (socket monitor) or a silent one (no pong) a new socket
after a jittered back-off (the engine's `Backoff`) and a new hello. All share
one ZeroMQ context, so a thousand fit on a small machine.

Protocol on stdio (JSON lines): it prints {"ready": n} once all were
welcomed; the parent writes {"cut": wall_time} when it cut them all; the
child then prints {"reconnected": k, "of": n, "t": seconds since the cut} as
they come back, and {"done": ...} with the quantiles once all are back.
Anything else on stdin ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sys
import time

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from curvechat.client.state import Backoff
from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress, parse_connect

PING_S = 2.0  # the engine's default ping interval
REPLY_TIMEOUT_S = 10.0


class LightClient:
    def __init__(self, ctx: zmq.asyncio.Context, addrs: list[ServerAddress], backoff: Backoff):
        self.ctx = ctx
        self.addrs = addrs
        self.index = random.randrange(len(addrs))
        self.public, self.secret = zmq.curve_keypair()
        self.backoff = backoff
        self.welcomed_at = 0.0  # wall time of the last welcome
        self.welcomes = 0
        self.rids = itertools.count(1)

    async def run(self) -> None:
        attempt = 0
        while True:
            addr = self.addrs[self.index % len(self.addrs)]
            sock = self.ctx.socket(zmq.DEALER)
            sock.curve_serverkey = addr.server_key.encode()
            sock.curve_publickey = self.public
            sock.curve_secretkey = self.secret
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            sock.connect(addr.endpoint)
            try:
                if await self._session(sock, monitor):
                    attempt = 0
            finally:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
                monitor.close(linger=0)
                sock.close(linger=0)
            attempt += 1
            self.index += 1
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _request(self, sock: zmq.asyncio.Socket, req: m.AnyRequest) -> m.AnyReply | None:
        rid = next(self.rids)
        await asyncio.wait_for(sock.send(encode_request(rid, req)), REPLY_TIMEOUT_S)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            data = await asyncio.wait_for(sock.recv(), max(0.01, deadline - time.monotonic()))
            frame = decode_server_frame(data)
            if frame.rid == rid:
                return frame.msg

    async def _session(self, sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket) -> bool:
        """One connection: hello, then ping until it is lost. True if welcomed."""
        lost = asyncio.ensure_future(monitor.recv_multipart())
        try:
            hello = asyncio.ensure_future(self._request(sock, m.Hello(client="storm")))
            await asyncio.wait({hello, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not hello.done():
                hello.cancel()
                with contextlib.suppress(BaseException):
                    await hello
                return False
            if hello.exception() is not None or not isinstance(hello.result(), m.Welcome):
                return False
            self.welcomed_at = time.time()
            self.welcomes += 1
            while True:
                pause = asyncio.ensure_future(asyncio.sleep(PING_S * random.uniform(0.8, 1.2)))
                await asyncio.wait({pause, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost.done():
                    pause.cancel()
                    event = parse_monitor_message(lost.result())
                    if event["event"] == zmq.EVENT_DISCONNECTED:
                        return True
                    lost = asyncio.ensure_future(monitor.recv_multipart())
                    continue
                try:
                    reply = await self._request(
                        sock, m.Ping(t=int(time.time() * 1000), reconnects=self.welcomes - 1)
                    )
                except (TimeoutError, zmq.ZMQError):
                    return True
                if not isinstance(reply, m.Pong):
                    return True
        finally:
            lost.cancel()
            with contextlib.suppress(BaseException):
                await lost


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(n: int, connects: list[str]) -> None:
    ctx = zmq.asyncio.Context()
    ctx.set(zmq.MAX_SOCKETS, max(4096, n * 4 + 64))
    addrs = [a for c in connects for a in parse_connect(c)]
    clients = [LightClient(ctx, addrs, Backoff()) for _ in range(n)]
    clients_tasks = []
    t_start = time.time()
    for i, client in enumerate(clients):
        clients_tasks.append(asyncio.ensure_future(client.run()))
        if i % 50 == 49:
            await asyncio.sleep(0.25)  # a gentle ramp-up, not the storm
    while (welcomed := sum(c.welcomes > 0 for c in clients)) < n:
        await asyncio.sleep(0.5)
        print(f"storm: {welcomed}/{n} welcomed", file=sys.stderr)
    emit({"ready": n, "s": round(time.time() - t_start, 3)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if "cut" not in cmd:
            break
        cut = float(cmd["cut"])
        last = -1
        while True:
            back = [c.welcomed_at - cut for c in clients if c.welcomed_at > cut]
            if len(back) != last:
                last = len(back)
                emit({"reconnected": len(back), "of": n, "t": round(time.time() - cut, 3)})
            if len(back) == n:
                back.sort()
                emit(
                    {
                        "done": n,
                        "all_s": round(back[-1], 3),
                        "p50_s": round(back[n // 2], 3),
                        "p99_s": round(back[min(n - 1, int(n * 0.99))], 3),
                    }
                )
                break
            await asyncio.sleep(0.1)
    for task in clients_tasks:
        task.cancel()
    await asyncio.gather(*clients_tasks, return_exceptions=True)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
