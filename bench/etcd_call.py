"""What one etcd transaction costs the calling process, apart from etcd:
an `EtcdStore` on a one-member cluster on loopback sends prebuilt message
transactions shaped like the group commit's fast path (per message the
message put, the idempotency-key put and its "absent" compare), one or
four in flight, and reports transactions/s and the CPU this process spent
per transaction: its event loop's thread, and all of it (gRPC's own
threads included). Building the transactions is timed apart.

    python -m bench.etcd_call --messages 1,10,47 --count 400

docs/performance.md ("The cluster nodes' work per message") uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curvechat.store import NewMessage
from curvechat.store.etcd import EtcdStore
from curvechat.store.etcd.client import now_ms
from curvechat.store.etcd.messages import _next_message
from curvechat.store.etcd.runs import RunBuilder

ENVELOPE = os.urandom(439)  # a 120-character message's envelope


def _builder(store: EtcdStore, messages: int) -> Any:
    from aetcd import rpc  # type: ignore[import-untyped]

    head = [0, 0]  # the room's [head, last_ts], as the group commit keeps it

    def build() -> Any:
        """As the fast path builds it (`_next_message`, the store's own)."""
        req = rpc.TxnRequest()
        runs = RunBuilder()
        now = now_ms()
        for _ in range(messages):
            txn = f"t{head[0] + 1:015d}"
            ik = store.k_idem("room", "alice", txn)
            store.add_version_is(req.compare, ik, 0)
            _next_message(
                store, NewMessage("room", "alice", txn, ENVELOPE), ik, head, now, req.success, runs
            )
        runs.write(store, req.success)
        return req

    return build


async def _sender(store: EtcdStore, todo: Iterator[Any]) -> None:
    """Send transactions from `todo` (shared with the other senders) one at a time."""
    for req in todo:
        await store._send_txn(req)


async def run(endpoint: str, messages: int, count: int) -> None:
    store = EtcdStore([endpoint], prefix=f"/bench-call-{time.monotonic_ns()}/")
    await store.open()
    try:
        build = _builder(store, messages)
        for _ in range(20):  # warm up the channel
            await store._send_txn(build())
        t0 = time.thread_time()
        reqs = [build() for _ in range(count)]
        built = (time.thread_time() - t0) / count
        for inflight in (1, 4):
            todo = iter(reqs if inflight == 1 else [build() for _ in range(count)])

            w0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
            await asyncio.gather(*(_sender(store, todo) for _ in range(inflight)))
            wall = time.perf_counter() - w0
            loop_us = 1e6 * (time.thread_time() - c0) / count
            all_us = 1e6 * (time.process_time() - p0) / count
            print(
                f"{messages} messages a transaction, {inflight} in flight: {count / wall:,.0f}"
                f" transactions/s; this process per transaction: event loop {loop_us:.0f} µs,"
                f" all threads {all_us:.0f} µs; building it {1e6 * built:.0f} µs",
                flush=True,
            )
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    import bench.harness  # noqa: F401 - puts tests/ on sys.path, for support.etcd

    from support.etcd import etcd_cluster

    ap = argparse.ArgumentParser(prog="python -m bench.etcd_call", description=__doc__)
    ap.add_argument("--messages", default="1,10,47", help="messages a transaction, each 1 … 63")
    ap.add_argument("--count", type=int, default=400, help="transactions per measurement")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.messages.split(",")]
    if not all(1 <= n <= 63 for n in sizes):
        ap.error("--messages: 1 … 63 each (two puts a message within etcd's 128 operations)")
    with tempfile.TemporaryDirectory() as tmp, etcd_cluster(Path(tmp), size=1) as etcd:
        for n in sizes:
            asyncio.run(run(etcd.endpoints.split(",")[0], n, args.count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
