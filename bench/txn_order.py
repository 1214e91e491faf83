"""What a message row costs the client cache by the order of its
transaction ids: the cache's `messages` table and indexes (client/
messagerows.py), filled with PREFILL rows, then N rows inserted 32 to a
transaction (as acks come back), with random ids (16 random bytes each, as
before 2026-12-05) and with ids in order (`sending.TxnIds`); CPU and wall
time per row (docs/performance.md, "Transaction ids in order").

    python -m bench.txn_order 100000 60000
"""

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from curvechat.client.messagerows import SCHEMA
from curvechat.client.sending import TxnIds

BATCH = 32


def run(txn: Callable[[], str], prefill: int, count: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "cache.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        sealed = os.urandom(120)
        seq = itertools.count(1)

        def insert(n: int) -> None:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO messages (room, seq, ts_ms, sender, txn, sealed, epoch)"
                " VALUES (?, ?, 0, 'me', ?, ?, ?)",
                [("room", s, txn(), sealed, s // 100) for s in itertools.islice(seq, n)],
            )
            db.execute("COMMIT")

        for _ in range(prefill // 1000):
            insert(1000)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(count // BATCH):
            insert(BATCH)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        db.close()
    return cpu / count * 1e6, wall / count * 1e6


def main(argv: list[str]) -> None:
    prefill = int(argv[0]) if argv else 100_000
    count = int(argv[1]) if len(argv) > 1 else 60_000
    for _ in range(2):
        for name, txn in (("random", lambda: secrets.token_urlsafe(16)), ("in order", TxnIds())):
            cpu, wall = run(txn, prefill, count)
            print(f"{name:>8}: {cpu:.1f} us of CPU, {wall:.1f} us in all, a row")


if __name__ == "__main__":
    main(sys.argv[1:])
