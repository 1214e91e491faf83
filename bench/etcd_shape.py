"""What etcd itself can do with the chat store's message transactions, with
no chat node in the way: a fresh 3-member cluster on loopback, `WRITERS`
Python writers each committing one room's messages in transactions shaped
like `store/etcd/messages.py`'s fast path (per message: the
idempotency-key put and its "absent" compare; per transaction: the message
run's put and the head's; `--shape keys`: a put a message instead of the
run, as before message runs), optionally with cluster feeds (`ClusterFeed`,
what every node runs) watching. Prints msgs/s and the CPU etcd and this
process spent per message (from /proc/<pid>/stat).

    python -m bench.etcd_shape [--group 32] [--writers 2] [--watchers 0,2] [--seconds 5]
                               [--shape runs|keys]

docs/performance.md (the cluster row) compares it with the chat nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.common import proc_cpu_seconds
from curvechat.store.etcd import EtcdStore
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.feed import ClusterFeed

ENVELOPE = os.urandom(420)  # about a 100-character message's envelope


async def _writer(store: EtcdStore, room: str, group: int, runs: bool, stop: asyncio.Event) -> int:
    seq = done = 0
    while not stop.is_set():
        compares, puts, run = [], [], []
        for _ in range(group):
            seq += 1
            txn = f"t{seq:015d}"
            ik = store.k_idem(room, "alice", txn)
            if runs:
                run.append((seq, "alice", txn, ENVELOPE))
            else:
                msg = rec.Msg(seq, "alice", txn, ENVELOPE, "bench")
                puts.append(store._put(store.k_msg(room, seq), rec.enc.encode(msg)))
            puts.append(store._put(ik, rec.enc.encode((seq, seq))))
            compares.append(store._version_is(ik, 0))
        if runs:
            value = rec.enc.encode(rec.Run(seq - group + 1, run, "bench"))
            puts.append(store._put(store.k_msg(room, seq), value))
        puts.append(store._put(store.k_head(room), b"%d" % seq))
        await store._txn(compares, puts)
        done += group
    return done


async def _watcher(store: EtcdStore, seen: list[int]) -> None:
    feed = ClusterFeed(store, await store.current_revision())
    async for events in feed.stream():
        seen[0] += len(events)


async def one_run(
    endpoints: list[str],
    pids: list[int],
    group: int,
    writers: int,
    watchers: int,
    seconds: float,
    runs: bool = True,
) -> dict[str, float]:
    prefix = f"/bench-shape-{time.monotonic_ns()}/"
    stores = [EtcdStore(endpoints, prefix=prefix) for _ in range(max(writers, watchers))]
    for s in stores:
        await s.open()
    seen = [0]
    watching = [asyncio.create_task(_watcher(stores[i], seen)) for i in range(watchers)]
    await asyncio.sleep(0.5)
    stop = asyncio.Event()
    me = os.getpid()
    etcd0, self0, t0 = sum(map(proc_cpu_seconds, pids)), proc_cpu_seconds(me), time.monotonic()
    writing = [
        asyncio.create_task(_writer(stores[i], f"room{i}", group, runs, stop))
        for i in range(writers)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    n = sum(await asyncio.gather(*writing))
    wall = time.monotonic() - t0
    etcd_cpu = sum(map(proc_cpu_seconds, pids)) - etcd0
    self_cpu = proc_cpu_seconds(me) - self0
    for t in watching:
        t.cancel()
    await asyncio.gather(*watching, return_exceptions=True)
    for s in stores:
        await s.close()
    return {
        "msgs_per_s": round(n / wall, 1),
        "etcd_us_per_msg": round(1e6 * etcd_cpu / n, 1),
        "python_us_per_msg": round(1e6 * self_cpu / n, 1),
        "events_seen": seen[0],
    }


def main(argv: list[str] | None = None) -> int:
    import bench.harness  # noqa: F401 - puts tests/ on sys.path, for support.etcd

    from support.etcd import etcd_cluster

    ap = argparse.ArgumentParser(prog="python -m bench.etcd_shape", description=__doc__)
    ap.add_argument("--group", type=int, default=32, help="messages per transaction (<= 40)")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--watchers", default="0,2", help="feeds watching, one run each")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--shape", choices=("runs", "keys"), default="runs")
    args = ap.parse_args(argv)
    most = 40 if args.shape == "keys" else 60  # under etcd's 128 operations
    if not 1 <= args.group <= most:
        ap.error(f"--group must be 1 … {most} with --shape {args.shape}")
    with tempfile.TemporaryDirectory() as tmp, etcd_cluster(Path(tmp), size=3) as etcd:
        pids = [m.proc.pid for m in etcd.members if m.proc is not None]
        for watchers in (int(w) for w in args.watchers.split(",")):
            r = asyncio.run(
                one_run(
                    etcd.endpoints.split(","),
                    pids,
                    args.group,
                    args.writers,
                    watchers,
                    args.seconds,
                    args.shape == "runs",
                )
            )
            print(
                f"{args.shape}: group {args.group}, {args.writers} writers, {watchers} watchers:"
                f" {r['msgs_per_s']:,.0f} msgs/s, etcd {r['etcd_us_per_msg']} us/msg,"
                f" this process {r['python_us_per_msg']} us/msg, events seen {r['events_seen']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
