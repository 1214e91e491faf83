"""The node's own share of an idle connection: one ChatNode (SQLite store)
in this process, N idle clients (CURVE, `hello`, ZMTP heartbeats) connected
from two other processes; prints the process's RSS per connection and what
Python keeps per connection (tracemalloc), with the lines that keep it.

    python -m bench.idle_node [N=3000]

Next to `python -m bench.idle_floor N 4 --zap` (libzmq's share with ZAP, as
the node authenticates), this says which part of `make bench`'s "idle" line
is libzmq's and which is the node's Python.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import zmq

from bench.common import proc_mem, raise_fd_limit
from bench.idle_floor import clients
from curvechat.protocol import encode_request
from curvechat.protocol import messages as m

STEP = 200  # handshakes in flight per client process (the node's handshake timeout is 10 s)
HELLO = encode_request(1, m.Hello(client="idle", batch=True))


async def measure(n: int, folder: Path) -> None:
    from curvechat.server.node import ChatNode
    from curvechat.store.sqlite import SQLiteStore

    raise_fd_limit()
    tracemalloc.start(1)
    store = SQLiteStore(folder / "store.db")
    await store.open()
    pub, sec = zmq.curve_keypair()
    node = ChatNode(store, public_key=pub, secret_key=sec, bind="tcp://127.0.0.1:0")
    endpoint = await node.start()
    await asyncio.sleep(1)
    gc.collect()
    gc.freeze()  # as `curvechat serve` does once it is ready (server/app.py)
    objects0 = len(gc.get_objects())
    snap0, rss0 = tracemalloc.take_snapshot(), proc_mem(os.getpid())["VmRSS"]
    fork = mp.get_context("fork")
    done: mp.Queue[int] = fork.Queue()
    procs = [
        fork.Process(
            target=clients,
            args=(n // 2, endpoint, pub, done),
            kwargs={"hello": HELLO, "step": STEP},
            daemon=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    connected = 0
    for _ in procs:
        while done.empty():
            await asyncio.sleep(0.2)
        connected += done.get()
    await asyncio.sleep(5)  # heartbeats in steady state
    gc.collect()
    snap1, rss1 = tracemalloc.take_snapshot(), proc_mem(os.getpid())["VmRSS"]
    kept = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    print(
        f"{connected} idle connections, {len(node.sessions)} sessions: RSS "
        f"{(rss1 - rss0) / connected:,.0f} B per connection, of which Python keeps "
        f"{kept / connected:,.0f} B (tracemalloc)"
    )
    for stat in snap1.compare_to(snap0, "lineno")[:12]:
        print(f"  {stat.size_diff / connected:7.0f} B  {stat.traceback}")
    # What a full collection of the cyclic GC walks, and how long it stops
    # the event loop for (tracemalloc off: it slows allocation, not the walk).
    tracemalloc.stop()
    objects = len(gc.get_objects())
    t0 = time.perf_counter()
    gc.collect()
    full_ms = (time.perf_counter() - t0) * 1000
    print(
        f"GC-tracked objects: {objects:,} ({(objects - objects0) / connected:.1f} per "
        f"connection); a full collection takes {full_ms:.1f} ms"
    )
    for p in procs:
        p.kill()
    await node.stop()
    await store.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(n, Path(folder)))


if __name__ == "__main__":
    main()
