"""Another process of the home holds the local cache in a long write (past
SQLite's 5 s wait) while a push comes in, or while the client syncs after
connecting: the engine says so in one line, not a traceback, and the
messages are there once the cache is free."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from support.clients import ClientFactory
from support.servers import ServerProcess


def texts(client: Any) -> list[str | None]:
    return [m.text for m in client.cache.messages("r", limit=9)]


async def _busy_while(
    server: ServerProcess,
    clients: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    act: Callable[[Any, Any], Awaitable[None]],
    said: str,
) -> tuple[Any, Any, Any]:
    """alice and bob in room "r" with one message; then bob's cache held by
    another process of his home while `act(alice, bob)` runs, until the
    log says `said` (SQLite waits 5 s for the lock, then gives up)."""
    caplog.set_level(logging.WARNING, logger="curvechat.client")
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before")
    await bob_events.until(lambda: texts(bob) == ["before"])
    path = Path(bob.cache._db.execute("PRAGMA database_list").fetchone()[2])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process of bob's home, writing
    try:
        await act(alice, bob)
        for _ in range(600):
            if said in caplog.text:
                break
            await asyncio.sleep(0.05)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert said in caplog.text, caplog.text
    assert "Traceback" not in caplog.text
    return alice, bob, bob_events


async def test_a_push_while_another_process_writes_the_cache(
    server: ServerProcess, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def push(alice: Any, bob: Any) -> None:
        await alice.send("r", "while busy")

    said = "a push was not stored: the local cache: database is locked"
    alice, bob, bob_events = await _busy_while(server, clients, caplog, push, said)
    assert "push handling failed" not in caplog.text
    await alice.send("r", "after")  # the next push finds the gap, and fills it
    await bob_events.until(lambda: texts(bob) == ["before", "while busy", "after"])


async def test_a_sync_after_connecting_while_another_process_writes_the_cache(
    server: ServerProcess, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection comes back while the cache is held: the sync after
    connecting cannot finish. The client says so in one line and starts
    over, and is ready once the cache is free; before, it stayed connected
    and never ready (its sends waited until the connection dropped)."""

    async def reconnect(alice: Any, bob: Any) -> None:
        await alice.send("r", "while busy")
        bob.conn.drop("a test: connect again")

    said = "the sync after connecting stopped: the local cache: database is locked"
    _, bob, bob_events = await _busy_while(server, clients, caplog, reconnect, said)
    ack = await bob.send("r", "bob is ready", timeout=20)  # ready again, on its own
    assert ack.seq == 3
    await bob_events.until(lambda: texts(bob) == ["before", "while busy", "bob is ready"])
