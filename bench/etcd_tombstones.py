"""What the keys a run deleted cost the puts that come after them: the bare
etcd limit (`limits.etcd_limits`: 128 puts a transaction, new keys) run
again and again on one 3-member cluster, each run under a prefix of its
own, with what each run leaves behind: its keys deleted and left as
tombstones (the bare run before 2026-12-05), deleted and compacted away
(the bare run now), or kept. Per run: puts/s and the CPU of etcd per put
and member (docs/performance.md, "The bare etcd run's tombstones").

    python -m bench.etcd_tombstones --runs 5 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.limits import delete_keys, put_batches
from bench.one_client import process_cpu

MODES = ("tombstones", "compacted", "kept")


async def one_run(
    endpoints: list[str], pids: list[int], prefix: bytes, seconds: float, mode: str
) -> tuple[float, float]:
    """Puts/s of one run under `prefix` and the CPU seconds etcd's members
    used meanwhile, then what `mode` leaves behind."""
    from curvechat.store.etcd import EtcdStore

    store = EtcdStore(endpoints, prefix=prefix.decode())
    await store.open()
    before = [process_cpu(p) for p in pids]
    try:
        n, wall, _ = await put_batches(store, prefix, os.urandom(340), seconds)
        used = sum(process_cpu(p) - b for p, b in zip(pids, before, strict=True))
        if mode != "kept":
            await delete_keys(store, prefix, compact=mode == "compacted")
    finally:
        await store.close()
    return n / wall, used


def main() -> None:
    import bench.harness  # noqa: F401 - puts tests/ on sys.path, for support.etcd

    from support.etcd import etcd_cluster

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--mode", choices=MODES, action="append", help="default: all three")
    args = ap.parse_args()
    for mode in args.mode or MODES:
        with (
            tempfile.TemporaryDirectory() as tmp,
            etcd_cluster(Path(tmp), size=3) as etcd,
        ):
            pids = [m.proc.pid for m in etcd.members if m.proc]
            for run in range(args.runs):
                rate, used = asyncio.run(
                    one_run(
                        etcd.endpoints.split(","),
                        pids,
                        b"/tomb%d/" % run,
                        args.seconds,
                        mode,
                    )
                )
                per_put = used / len(pids) / (rate * args.seconds) * 1e6
                print(
                    f"{mode:>10}, run {run + 1}: {rate:,.0f} puts/s,"
                    f" {per_put:.0f} us of CPU a put on each member",
                    flush=True,
                )


if __name__ == "__main__":
    main()
