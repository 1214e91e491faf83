"""Another process of the home holds the local cache in a long write (past
SQLite's 5 s wait) while a push comes in: the engine says so in one line,
not a traceback, and the message is there once the cache is free."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_a_push_while_another_process_writes_the_cache(
    server: ServerProcess, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="curvechat.client")
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before")
    await bob_events.until(lambda: [m.text for m in bob.cache.messages("r", limit=9)] == ["before"])
    path = Path(bob.cache._db.execute("PRAGMA database_list").fetchone()[2])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process of bob's home, writing
    try:
        await alice.send("r", "while busy")
        for _ in range(400):  # SQLite waits 5 s for the lock, then gives up
            if "the local cache" in caplog.text:
                break
            await asyncio.sleep(0.05)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "a push was not stored: the local cache: database is locked" in caplog.text
    assert "Traceback" not in caplog.text and "push handling failed" not in caplog.text
    await alice.send("r", "after")  # the next push finds the gap, and fills it
    want = ["before", "while busy", "after"]
    await bob_events.until(lambda: [m.text for m in bob.cache.messages("r", limit=9)] == want)


async def test_a_sync_after_connecting_while_another_process_writes_the_cache(
    server: ServerProcess, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection comes back while the cache is held: the sync after
    connecting cannot finish. The client says so in one line and starts
    over, and is ready once the cache is free; before, it stayed connected
    and never ready (its sends waited until the connection dropped)."""
    caplog.set_level(logging.WARNING, logger="curvechat.client")
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before")
    await bob_events.until(lambda: [m.text for m in bob.cache.messages("r", limit=9)] == ["before"])
    path = Path(bob.cache._db.execute("PRAGMA database_list").fetchone()[2])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process of bob's home, writing
    try:
        await alice.send("r", "while busy")
        bob.conn.drop("a test: connect again")
        for _ in range(600):  # SQLite waits 5 s for the lock, then gives up
            if "the sync after connecting stopped" in caplog.text:
                break
            await asyncio.sleep(0.05)
    finally:
        other.execute("ROLLBACK")
        other.close()
    said = "the sync after connecting stopped: the local cache: database is locked"
    assert said in caplog.text, caplog.text
    assert "Traceback" not in caplog.text
    ack = await bob.send("r", "bob is ready", timeout=20)  # ready again, on its own
    assert ack.seq == 3  # type: ignore[union-attr]
    want = ["before", "while busy", "bob is ready"]
    await bob_events.until(lambda: [m.text for m in bob.cache.messages("r", limit=9)] == want)
