"""A fault-injecting TCP proxy: what the chaos suite puts between clients and
each chat node, and between each chat node and each etcd member.

All proxies run on one asyncio loop in a background thread (`ProxyHub`), so
that the faults they inject do not depend on how busy the workload's loop is.
Each `Proxy` has a mode, changed from any thread:

* ``pass``       forward both ways (after `latency` seconds, order kept;
                 with `loss`, that share of chunks is held back a
                 retransmission timeout first, 0.2-1 s, and everything behind
                 it waits: what a lost segment does to a TCP stream. This
                 kernel has no netem, so loss is emulated here);
* ``blackhole``  a silent partition: connections stay open (and new ones are
                 accepted) but no byte goes through in either direction;
* ``refuse``     every existing connection is reset and new ones are closed
                 at once (a link that is down and says so).

`cut()` resets every current connection once and lets the peers reconnect
(the reconnect storm). Nothing here knows what it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

Mode = Literal["pass", "blackhole", "refuse"]
CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dropped link or a dead host would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    def __init__(self, hub: ProxyHub, name: str, target_port: int) -> None:
        self.hub = hub
        self.name = name
        self.target_port = target_port
        self.port = 0
        self.mode: Mode = "pass"
        self.latency = 0.0
        self.loss = 0.0
        self.stalls = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=4096)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # --- control (any thread) ------------------------------------------------------
    def set(
        self, mode: Mode | None = None, latency: float | None = None, loss: float | None = None
    ) -> None:
        def apply() -> None:
            if mode is not None:
                self.mode = mode
                if mode == "refuse":
                    self._reset_all()
            if latency is not None:
                self.latency = latency
            if loss is not None:
                self.loss = loss

        self.hub.call(apply)

    def cut(self) -> int:
        """Reset every current connection once; returns how many were cut."""
        done: list[int] = []

        def apply() -> None:
            done.append(len(self._links))
            self._reset_all()

        self.hub.call(apply)
        return done[0]

    def heal(self) -> None:
        self.set(mode="pass", latency=0.0, loss=0.0)

    # --- on the hub's loop -----------------------------------------------------------
    def _reset_all(self) -> None:
        for client, upstream in list(self._links):
            _reset(client)
            if upstream is not None:
                _reset(upstream)
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            _reset(writer)
            return
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._links.discard(link)
            _reset(writer)
            return
        self._links.discard(link)
        link = (writer, up_writer)
        self._links.add(link)
        try:
            src, head = await self._identify(reader)

            def blocked() -> bool:
                return self._blocked(src)

            await asyncio.gather(
                self._pump(reader, up_writer, blocked, head),
                self._pump(up_reader, writer, blocked),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                _reset(writer)
                _reset(up_writer)

    async def _identify(self, reader: asyncio.StreamReader) -> tuple[str | None, bytes]:
        """Who dialled this connection, and the bytes read to find out (sent
        on first). A plain proxy does not ask."""
        return None, b""

    def _blocked(self, src: str | None) -> bool:
        """Whether the bytes of a connection from `src` are dropped now."""
        return self.mode == "blackhole"

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        blocked: Callable[[], bool],
        first: bytes = b"",
    ) -> None:
        """Copy one direction; a chunk read in a partition is dropped (the TCP
        stream is then corrupt, so a healed link is reset, as after a real
        partition long enough for the peers' keep-alives to give up). With a
        latency, each chunk is delayed by it, in order, without throttling."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._deliver(queue, writer))
        dropped = False
        try:
            while True:
                data, first = (first, b"") if first else (await reader.read(CHUNK), b"")
                if sender.done():
                    sender.result()  # raises what ended it
                if not data:
                    await queue.put((0.0, b""))
                    await sender
                    return
                if blocked():
                    dropped = True
                    continue
                if dropped:
                    raise ConnectionResetError("healed after a partition dropped bytes")
                delay = self.latency
                if self.loss and random.random() < self.loss:
                    self.stalls += 1
                    delay += random.uniform(0.2, 1.0)  # a retransmission timeout
                await queue.put((time.monotonic() + delay, data))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()


class ProxyHub:
    """A thread running one asyncio loop for all proxies."""

    def __init__(self) -> None:
        self.proxies: list[Proxy] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chaos-proxies", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _submit(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Any) -> None:
        async def run() -> None:
            fn()

        self._submit(run())

    def add(self, name: str, target_port: int) -> Proxy:
        return self.start(Proxy(self, name, target_port))

    def start(self, proxy: Proxy) -> Proxy:
        """Listen with `proxy` (made on this hub) and keep it with the others."""
        self._submit(proxy._start())
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        async def stop_all() -> None:
            for proxy in self.proxies:
                await proxy._stop()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._submit(stop_all(), timeout=20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
