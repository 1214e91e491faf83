"""The local cache's checkpoints run on a thread of their own
(client/checkpoint.py): a commit on the event loop's connection never copies
the write-ahead log into the database file (and waits for the disk), the
thread does, and closing the cache stops it and leaves no log behind."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from curvechat.client.cache import Cache

KEY = bytes(32)
PAGE = 4096


def _fill(cache: Cache, pages: int) -> None:
    """Queue messages until about `pages` pages were committed to the log,
    in commits of about 40 pages, as a busy sender's acks are."""
    text = "x" * 2000
    for i in range(pages // 20):
        cache.enqueue_many("r", [f"t{i}-{j}" for j in range(40)], [text] * 40)


def _log_frames(path: Path) -> int:
    """Frames in the log since it last restarted (after a full checkpoint)."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_autocheckpoint=0")
        return int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        db.close()


def test_commits_on_the_cache_connection_never_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = Cache(path, KEY, checkpoint_every=3600)  # the thread does not run meanwhile
    try:
        _fill(cache, 3000)
        # SQLite's own default would have checkpointed at 1,000 pages and
        # started the log again from its beginning.
        assert _log_frames(path) > 2000
        assert cache.checkpointer.runs == 0
    finally:
        cache.close()


def test_the_thread_copies_the_log_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = Cache(path, KEY, checkpoint_every=0.05)
    try:
        _fill(cache, 400)
        deadline = time.monotonic() + 30
        while cache.checkpointer.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.checkpointer.runs > 0
        assert path.stat().st_size > 300 * PAGE  # the rows are in the database file
        assert len(cache.outbox()) == 20 * 40
    finally:
        cache.close()


def test_closing_the_cache_stops_the_thread_and_leaves_no_log(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = Cache(path, KEY, checkpoint_every=3600)
    _fill(cache, 200)
    cache.close()
    assert not cache.checkpointer.alive
    assert not (tmp_path / "cache.db-wal").exists()
    again = Cache(path, KEY)
    try:
        assert len(again.outbox()) == 10 * 40
    finally:
        again.close()


def test_the_log_is_started_again_while_commits_never_stop(tmp_path: Path) -> None:
    """Commits that keep coming while the thread checkpoints: every
    checkpoint of the thread overlaps a transaction, so the log would never
    start again from its beginning by itself; the cache's connection
    restarts it once it holds `restart_frames` frames."""
    path = tmp_path / "cache.db"
    cache = Cache(path, KEY, checkpoint_every=0.01, restart_frames=256)
    wal = tmp_path / "cache.db-wal"
    largest = 0
    try:
        text = "x" * 2000
        for i in range(1500):  # about 15,000 pages written in all, back to back
            with cache._tx():
                cache.enqueue_many("r", [f"t{i}-{j}" for j in range(5)], [text] * 5)
            largest = max(largest, wal.stat().st_size)
        assert cache.checkpointer.runs > 0 and cache.checkpointer.restarts > 0
        # Without the restarts the log took about 14,800 pages here.
        assert largest < 4000 * PAGE, largest // PAGE
    finally:
        cache.close()


# The cache's own connection is dropped unclosed on purpose (Python 3.13 warns).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_cache_never_closed_stops_its_thread_when_collected(tmp_path: Path) -> None:
    import gc
    import threading

    before = threading.active_count()
    cache = Cache(tmp_path / "cache.db", KEY, checkpoint_every=0.01)
    thread_alive = cache.checkpointer.alive
    del cache
    gc.collect()
    deadline = time.monotonic() + 30
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread_alive and threading.active_count() == before
