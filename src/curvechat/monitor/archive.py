"""The monitor's memory across its own restarts: one SQLite file in its
data dir (`monitor.db`) holding each node's metric samples of the last
`history_s` seconds and the outage timeline (as one JSON document).

Its size is bounded: samples older than the history window are deleted at
every `save` that is given `prune_before`, and SQLite reuses their pages;
the timeline's lists are bounded by the timeline itself. A file it cannot
read (damaged, from another format) is set aside as `monitor.db.bad-<n>`
and a fresh one started, so the monitor always starts.

Its methods block (SQLite): the monitor calls them from a worker thread, one
at a time. It must never hold anything but numbers and node URLs and names.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from curvechat.dashboard.history import Sample

log = logging.getLogger("curvechat.monitor")

FILE = "monitor.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    node TEXT NOT NULL,
    t INTEGER NOT NULL,
    sample TEXT NOT NULL,
    PRIMARY KEY (node, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kept (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Archive:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            n = 1
            while self.path.with_name(f"{FILE}.bad-{n}").exists():
                n += 1
            aside = self.path.with_name(f"{FILE}.bad-{n}")
            log.warning("%s is unreadable (%s); kept as %s", self.path, exc, aside.name)
            self.path.rename(aside)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():  # 0600 from the start: SQLite gives its -wal and -shm its mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        self.path.chmod(0o600)
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the archive is not open")
        return self._db

    def load(self, since: int) -> tuple[dict[str, Any] | None, dict[str, list[Sample]]]:
        """The timeline document (None if there is none) and each node's
        samples stamped after `since`, oldest first."""
        with self._lock:
            row = self.db.execute("SELECT value FROM kept WHERE key = 'timeline'").fetchone()
            samples: dict[str, list[Sample]] = {}
            for node, text in self.db.execute(
                "SELECT node, sample FROM samples WHERE t > ? ORDER BY node, t", (since,)
            ):
                try:
                    samples.setdefault(node, []).append(json.loads(text))
                except ValueError:
                    continue
        timeline = None
        if row is not None:
            try:
                timeline = json.loads(row[0])
            except ValueError:
                log.warning("the kept timeline is unreadable; starting a new one")
        return timeline if isinstance(timeline, dict) else None, samples

    def save(
        self,
        samples: list[tuple[str, Sample]],
        timeline: dict[str, Any] | None = None,
        *,
        prune_before: int | None = None,
    ) -> None:
        """Add `samples`, replace the timeline document (if given) and delete
        the samples stamped before `prune_before` (if given), in one transaction."""
        with self._lock:
            db = self.db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO samples (node, t, sample) VALUES (?, ?, ?)",
                    [
                        (node, int(s["t"]), json.dumps(s, separators=(",", ":")))
                        for node, s in samples
                    ],
                )
                if timeline is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO kept (key, value) VALUES ('timeline', ?)",
                        (json.dumps(timeline, separators=(",", ":")),),
                    )
                if prune_before is not None:
                    db.execute("DELETE FROM samples WHERE t < ?", (prune_before,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def forget(self, node: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM samples WHERE node = ?", (node,))

    def count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT count(*) FROM samples").fetchone()[0])
