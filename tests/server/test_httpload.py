"""What the HTTP side may cost the node (server/httpload.py): connections
capped in all and per address, idle ones closed, and the loop time of the
answers paid from a budget, with /healthz and /readyz always answered."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from curvechat.server.httpguard import listen
from curvechat.server.httpload import HOST_BURST, HOST_RATE, HostPacer, LoopBudget, cap_connections

from support.servers import ServerProcess


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_budget_is_spent_then_refilled_at_its_share() -> None:
    clock = Clock()
    budget = LoopBudget(share=0.05, burst=0.25, clock=clock)
    assert budget.may_start()
    budget.charge(0.35)  # one answer may overdraw it: -0.1 left
    assert not budget.may_start()
    clock.t += 1.0  # a second refills 0.05: -0.05 left
    assert not budget.may_start()
    clock.t += 1.5  # +0.025
    assert budget.may_start()
    clock.t += 1000
    budget.charge(0.25)  # saved up at most the burst
    assert not budget.may_start()


def test_one_address_waits_for_its_turn_and_others_do_not() -> None:
    clock = Clock()
    pacer = HostPacer(rate=10, burst=2, clock=clock)
    assert pacer.wait("a") == 0 and pacer.wait("a") == 0  # the burst
    assert pacer.wait("a") == pytest.approx(0.1)
    assert pacer.wait("a") == pytest.approx(0.2)
    assert pacer.wait("b") == 0
    assert pacer.wait("a", most=0.25) is None  # 0.3 away: refused, nothing taken
    assert pacer.wait("a") == pytest.approx(0.3)
    clock.t += 10
    assert pacer.wait("a") == 0


@contextlib.asynccontextmanager
async def serving(keepalive: float, total: int, per_host: int) -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, keepalive_timeout=keepalive)
    await runner.setup()
    assert runner.server is not None
    try:
        port = await listen(runner, "127.0.0.1", 0)
        cap_connections(runner.server, total=total, per_host=per_host)  # the test's own caps
        yield port
    finally:
        await runner.cleanup()


async def _closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except (TimeoutError, ConnectionResetError):
        return False


async def test_connections_over_the_cap_are_closed_and_idle_ones_time_out() -> None:
    async with serving(keepalive=1.0, total=6, per_host=4) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        await asyncio.sleep(0.1)
        over_r, over_w = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_peer(over_r, 2.0)  # a fifth from the same address
        over_w.close()
        # Another address still gets in, and is served.
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", port))
        r, w = await asyncio.open_connection(sock=sock)
        w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await r.readline()).startswith(b"HTTP/1.1 200")
        w.close()
        # The held ones never sent a request: closed once idle.
        for reader, _ in held:
            assert await _closed_by_peer(reader, 5.0)
        for _, writer in held:
            writer.close()


async def _from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def test_at_the_cap_an_address_with_fewer_connections_makes_room() -> None:
    """Addresses that fill the cap do not keep out one that has none (an
    orchestrator's probe): the oldest connection of an address holding the
    most is closed for it. One from an address holding the most is not let in."""
    async with serving(keepalive=10.0, total=4, per_host=3) as port:
        first = [await _from("127.0.0.2", port) for _ in range(2)]
        second = [await _from("127.0.0.3", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        r, w = await _from("127.0.0.3", port)  # holds the most already: not let in
        assert await _closed_by_peer(r, 2.0)
        w.close()
        r, w = await _from("127.0.0.4", port)
        w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await r.readline()).startswith(b"HTTP/1.1 200")
        assert await _closed_by_peer(first[0][0], 2.0)  # the oldest of the most
        assert not await _closed_by_peer(second[0][0], 0.3)
        assert not await _closed_by_peer(first[1][0], 0.3)
        w.close()
        for _, writer in first + second:
            writer.close()


async def _hammer(base: str, path: str, source: str, seconds: float) -> list[int]:
    """Requests for `path` from `source`, on 8 connections, for `seconds`."""
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=8, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                async with http.get(base + path) as resp:
                    await resp.read()
                    statuses.append(resp.status)
                    if resp.status == 503:
                        assert resp.headers["Retry-After"] == "1"

        await asyncio.gather(*(one() for _ in range(8)))
    return statuses


async def test_one_address_is_paced(server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    t0 = time.monotonic()
    statuses = await _hammer(base, "/healthz", "127.0.0.3", 2.0)
    elapsed = time.monotonic() - t0
    assert len(statuses) <= HOST_BURST + HOST_RATE * elapsed + 8, (len(statuses), elapsed)
    assert set(statuses) == {200}  # held back, not refused


async def test_a_node_hammered_from_many_addresses_answers_busy_and_still_its_health(
    server: ServerProcess,
) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    sources = [f"127.0.0.{i}" for i in range(10, 20)]
    hammering = asyncio.gather(*(_hammer(base, "/api/state?since=0", s, 6.0) for s in sources))
    health = []
    async with aiohttp.ClientSession() as http:
        while not hammering.done():
            async with http.get(base + "/healthz") as resp:
                health.append(resp.status)
            await asyncio.sleep(0.1)
    statuses = [code for per_source in await hammering for code in per_source]
    assert 503 in statuses and 200 in statuses, sorted(set(statuses))
    assert set(health) == {200}
    assert "over its share of the event loop" in server.log()
