"""The local cache refuses writes for a reason of its own (a full disk,
an I/O error), not because another process of the home holds it. Queueing
a message is then a `cache_write` error (nothing queued, nothing awaited),
not an SQLite exception; and while acknowledged sends cannot be recorded,
the outbox tells the user once (a `Problem`) instead of only logging it,
and sends them once the cache takes writes again. A cache held by another
process (locked) passes by itself and is not told."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from curvechat.client import events as ev
from curvechat.client.cache import CACHE_TRIES, cache_busy
from curvechat.client.errors import CacheWriteFailed

from support.clients import ClientFactory
from support.servers import ServerProcess


def refuse(why: str) -> Any:
    def write(*args: object, **kw: object) -> Any:
        raise sqlite3.OperationalError(why)

    return write


def told(events: Any) -> list[str]:
    return [p.message for p in events.of(ev.Problem) if "local cache" in p.message]


async def test_queueing_on_a_full_disk_is_a_cache_write_error(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    await alice.create_room("r", [])
    enqueue = alice.cache.enqueue_many
    alice.cache.enqueue_many = refuse("database or disk is full")  # type: ignore[method-assign]
    with pytest.raises(CacheWriteFailed, match="database or disk is full") as caught:
        alice.queue("r", "not on disk")
    assert caught.value.code == "cache_write"
    assert alice.pending() == []
    alice.cache.enqueue_many = enqueue  # type: ignore[method-assign]
    ack = await alice.send("r", "on disk again", timeout=20)
    assert ack.seq >= 1


async def test_acked_sends_the_cache_cannot_record_are_told_once(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, events = await clients.make("alice", server.connect)
    await alice.create_room("r", [])
    record = alice.cache.record_sent
    alice.cache.record_sent = refuse("database or disk is full")  # type: ignore[method-assign]
    txn = alice.queue("r", "stored on the server, not here")
    await events.until(lambda: len(told(events)) == 1)
    assert "database or disk is full" in told(events)[0]
    await asyncio.sleep(CACHE_TRIES + 1.5)  # more passes fail: not told again
    assert len(told(events)) == 1
    assert [i.txn for i in alice.pending()] == [txn]
    alice.cache.record_sent = record  # type: ignore[method-assign]
    await events.until(lambda: any(a.txn == txn for a in events.of(ev.SendAcked)))
    assert alice.pending() == []


async def test_a_cache_held_by_another_process_is_not_told(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, events = await clients.make("alice", server.connect)
    await alice.create_room("r", [])
    record = alice.cache.record_sent
    alice.cache.record_sent = refuse("database is locked")  # type: ignore[method-assign]
    txn = alice.queue("r", "later")
    await asyncio.sleep(CACHE_TRIES + 1.5)
    assert told(events) == []
    alice.cache.record_sent = record  # type: ignore[method-assign]
    await events.until(lambda: any(a.txn == txn for a in events.of(ev.SendAcked)))


async def test_pushes_the_cache_cannot_store_are_told_once_and_fetched_later(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A full disk while messages arrive: the user is told once (not only a
    log line), and what was not stored is fetched once the cache takes
    writes again."""
    alice, _ = await clients.make("alice", server.connect)
    bob, events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await events.until(lambda: any(r.room == "r" for r in bob.rooms()))
    batch = bob.cache.batch
    bob.cache.batch = refuse("database or disk is full")  # type: ignore[method-assign]
    for i in range(CACHE_TRIES + 2):
        await alice.send("r", f"while full {i}", timeout=20)
    await events.until(lambda: len(told(events)) == 1)
    assert "database or disk is full" in told(events)[0]
    await asyncio.sleep(1.0)
    assert len(told(events)) == 1
    assert [m.text for m in bob.cache.messages("r")] == []
    bob.cache.batch = batch  # type: ignore[method-assign]
    await alice.send("r", "after", timeout=20)
    want = [f"while full {i}" for i in range(CACHE_TRIES + 2)] + ["after"]
    await events.until(lambda: [m.text for m in bob.cache.messages("r")] == want)


def test_a_lock_is_told_from_a_full_disk() -> None:
    assert cache_busy(sqlite3.OperationalError("database is locked"))
    assert not cache_busy(sqlite3.OperationalError("database or disk is full"))
    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as real:
        db.execute("SELECT * FROM nowhere")
    assert not cache_busy(real.value)  # an SQLite code that is not BUSY or LOCKED
