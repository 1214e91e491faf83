"""The local cache's checkpoints, on a thread of their own.

The cache's commits append to SQLite's write-ahead log without waiting for
the disk (synchronous=NORMAL, but for the outbox); copying the log back into
the database file (a checkpoint) waits for the disk twice. Left to SQLite,
the commit that crosses its threshold runs the checkpoint, on the thread
that commits: the client's event loop, stopped for one or two fsyncs (each
one of about 100 commits of a busy sender waited 3–30 ms for it).

Here the cache's own connection never checkpoints (`wal_autocheckpoint=0`);
this thread does, with a connection of its own, a `PASSIVE` checkpoint (it
never waits for the cache's readers or writer, nor makes them wait) every
`interval` seconds, and a last one when the cache closes it. SQLite
releases the GIL while it checkpoints.

It must never write a row, nor take a lock a commit of the cache's
connection would wait for.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL = 0.5
"""Seconds between two checkpoints: a sender at full rate writes a few
hundred pages in that time (SQLite's own threshold is 1,000 pages)."""


class Checkpointer:
    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._interval = interval
        self._stop = threading.Event()
        self.runs = 0
        """Checkpoints that copied frames (for tests and the curious)."""
        self._thread = threading.Thread(target=self._run, name="cache-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self.checkpoint()
        finally:
            self._db.close()

    def checkpoint(self) -> None:
        try:
            _, _, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the next turn tries again; the log only grows meanwhile
            log.warning("cache checkpoint failed: %s", exc)
            return
        if copied > 0:
            self.runs += 1

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread (it closes its connection); the cache's own
        connection checkpoints what is left when it closes."""
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join()
