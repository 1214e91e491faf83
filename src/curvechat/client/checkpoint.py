"""The local cache's checkpoints, mostly on a thread of their own.

The cache's commits append to SQLite's write-ahead log without waiting for
the disk (synchronous=NORMAL, but for the outbox); copying the log back into
the database file (a checkpoint) waits for the disk twice. Left to SQLite,
the commit that crosses its threshold runs the checkpoint, on the thread
that commits: the client's event loop, stopped for one or two fsyncs (each
one of about 100 commits of a busy sender waited 3–30 ms for it).

Here the cache's own connection does not checkpoint by itself
(`wal_autocheckpoint=0`); this thread does, with a connection of its own, a
`PASSIVE` checkpoint (it never waits for the cache's readers or writer, nor
makes them wait) every `interval` seconds. SQLite releases the GIL while it
checkpoints.

A log is started again from its beginning only by a transaction that begins
when every frame of it was copied; while commits come faster than a
checkpoint takes (a catch-up, a sender at full rate), one always begins
during the thread's checkpoint, and the log would grow without bound. So
once the log holds `restart_frames` frames, the cache's connection copies
what the thread has not yet copied itself (`restart_if_due`, before its next
transaction: a few hundred pages at most, and the disk's wait once per that
many frames, not at every thousand pages), and that transaction starts the
log again.

It must never write a row, nor take a lock a commit of the cache's
connection would wait for.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL = 0.5
"""Seconds between two checkpoints of the thread: a sender at full rate
writes a few hundred pages in that time (SQLite's own threshold is 1,000)."""

RESTART_FRAMES = 4096
"""Frames (pages) in the log from which the cache's connection restarts it
(16 MiB of 4 KiB pages)."""


class Checkpointer:
    def __init__(
        self, path: Path, interval: float = INTERVAL, restart_frames: int = RESTART_FRAMES
    ) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._interval = interval
        self._restart_frames = restart_frames
        self._stop = threading.Event()
        self.runs = 0
        """Checkpoints of the thread that copied frames (for tests and the curious)."""
        self.frames = 0
        """Frames in the log at the thread's last checkpoint."""
        self.restarts = 0
        """Checkpoints the cache's connection made to restart the log."""
        # The thread holds no reference to this object: one dropped without
        # `close` (a cache never closed) stops its thread when collected.
        self._thread = threading.Thread(
            target=_run,
            args=(weakref.ref(self), self._stop, interval),
            name="cache-checkpoint",
            daemon=True,
        )
        self._thread.start()

    def checkpoint(self) -> None:
        try:
            _, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the next turn tries again; the log only grows meanwhile
            log.warning("cache checkpoint failed: %s", exc)
            return
        self.frames = frames
        if copied > 0:
            self.runs += 1

    def restart_if_due(self, db: sqlite3.Connection) -> None:
        """On the cache's connection, outside a transaction: when the log has
        grown to `restart_frames`, copy what is left of it, so that the next
        transaction starts it again."""
        if self.frames < self._restart_frames or db.in_transaction:
            return
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("cache checkpoint failed: %s", exc)
            busy = 1
        if not busy:  # else the thread's checkpoint runs: the next transaction tries again
            self.frames = 0
            self.restarts += 1

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread and close its connection. The cache's own
        connection then checkpoints what is left when it closes, if it is the
        last connection to the file (another process of the same home may
        still have it open: the log is then left to the last one)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._db.close()

    def __del__(self) -> None:
        # Collected without `close` (its cache was dropped unclosed): the thread
        # holds it only during a checkpoint, so none runs now.
        self._stop.set()
        with contextlib.suppress(Exception):
            self._db.close()


def _run(ref: weakref.ref[Checkpointer], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        checkpointer = ref()
        if checkpointer is None:
            return
        checkpointer.checkpoint()
        del checkpointer
