"""Marking a room read while another process of the same home holds the
cache's write lock past the busy timeout: the unread count stays as it
was (the next mark clears it) and nothing is raised into the front end,
whose handler it would end."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_mark_read_waits_out_a_locked_cache_without_raising(
    server: ServerProcess, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    await alice.create_room("busy", [])
    alice.cache._db.execute("UPDATE rooms SET unread=3 WHERE room='busy'")
    alice.cache._db.execute("PRAGMA busy_timeout=50")
    path = alice.cache._db.execute("PRAGMA database_list").fetchone()[2]
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process of the home, writing
        with caplog.at_level(logging.WARNING, logger="curvechat.client"):
            alice.mark_read("busy")
        assert "could not mark busy read" in caplog.text
        assert alice.cache.room("busy").unread == 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    alice.mark_read("busy")
    assert alice.cache.room("busy").unread == 0
