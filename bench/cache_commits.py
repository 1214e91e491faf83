"""What the client cache's transactions cost a sender at full rate, on the
event loop's thread: one real client engine (E2E on) queues N messages at
once in a room of its own, twice, against a node of its own; every
transaction of its cache is timed where it begins (`Tx.__enter__`, where the
write-ahead log is restarted when due) and where it commits (`Tx.__exit__`),
and the log's largest size is sampled every 10 ms (client/checkpoint.py,
docs/performance.md "The client cache's checkpoints").

    python -m bench.cache_commits 40000
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench.engines import Engine
from bench.harness import ServerProcess, Users
from bench.run import SERVER_ARGS
from curvechat.client import messagerows

ROOM = "commits"


@contextmanager
def timed_transactions() -> Iterator[dict[str, list[float]]]:
    """Seconds of every begin and commit of the cache's transactions."""
    times: dict[str, list[float]] = {"begin": [], "commit": []}
    enter, exit_ = messagerows.Tx.__enter__, messagerows.Tx.__exit__

    def timed_enter(tx: messagerows.Tx) -> None:
        t0 = time.perf_counter()
        try:
            enter(tx)
        finally:
            times["begin"].append(time.perf_counter() - t0)

    def timed_exit(tx: messagerows.Tx, *exc: Any) -> None:
        t0 = time.perf_counter()
        try:
            exit_(tx, *exc)
        finally:
            times["commit"].append(time.perf_counter() - t0)

    messagerows.Tx.__enter__ = timed_enter  # type: ignore[method-assign]
    messagerows.Tx.__exit__ = timed_exit  # type: ignore[method-assign]
    try:
        yield times
    finally:
        messagerows.Tx.__enter__ = enter  # type: ignore[method-assign]
        messagerows.Tx.__exit__ = exit_  # type: ignore[method-assign]


def summary(name: str, seconds: list[float]) -> str:
    s = sorted(seconds) or [0.0]
    n = len(s)
    return (
        f"{name}: {n} · p50 {s[n // 2] * 1e3:.2f} · p99 {s[int(n * 0.99)] * 1e3:.2f}"
        f" · max {s[-1] * 1e3:.2f} ms · over 3 ms: {sum(1 for x in s if x > 0.003)}"
        f" · {sum(s) * 1e3:.0f} ms in all"
    )


async def run(root: Path, connect: str, count: int) -> None:
    e = Engine(Users().spec("sender"), root / "sender", connect)
    await e.client.start()
    assert await e.client.wait_ready(60)
    await e.client.create_room(ROOM, [])
    while not e.client.core.held(ROOM):
        await asyncio.sleep(0.05)
    wal = root / "sender" / "cache.db-wal"
    largest, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            with suppress(OSError):
                largest[0] = max(largest[0], wal.stat().st_size)

    threading.Thread(target=sample, daemon=True).start()
    with timed_transactions() as times:
        for round_ in (1, 2):
            t0 = time.monotonic()
            e.queue(ROOM, count)
            while e.unacked > 0:
                e.acked_event.clear()
                await e.acked_event.wait()
            print(f"round {round_}: {count / (time.monotonic() - t0):,.0f} acked sends/s")
    stop.set()
    await e.client.close()
    e.cache.close()
    for name, seconds in times.items():
        print(summary(name, seconds))
    print(f"the log's largest size: {largest[0] // 4096:,} pages of 4 KiB")


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 40_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "node", extra_args=SERVER_ARGS).start()
        try:
            asyncio.run(run(root, server.connect, count))
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
