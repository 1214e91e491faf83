"""Measure what messages cost in etcd's space quota (docs/operations.md,
Sizing): how many messages fit in one MiB of `--quota-backend-bytes`.

A fresh single etcd member on loopback (the tests' helper, tests/support),
the real `EtcdStore`, and real envelopes: a text of --chars characters
sealed as a client seals it (XChaCha20-Poly1305, padded to 256 bytes,
signed), a client's transaction id, room "general", sender "alice". The
messages go in one at a time (--concurrency 1: each its own transaction, as
at a quiet cluster's rates) or from N concurrent senders (group commit). The
figure is etcd's own `dbSize` (what it compares with the quota) and
`dbSizeInUse`, read with the Status call before and after, then again after
compacting every old revision and defragmenting.

    .venv/bin/python scripts/measure_capacity.py
    .venv/bin/python scripts/measure_capacity.py --messages 20000 --concurrency 50
    .venv/bin/python scripts/measure_capacity.py --chars 400 --json results/capacity.json

Needs the Debian package etcd-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from curvechat.crypto.envelope import Plaintext, seal_message  # noqa: E402
from curvechat.crypto.identity import Identity  # noqa: E402
from curvechat.protocol import encode  # noqa: E402
from curvechat.store import EpochRecord, MemberChange, NewMessage, OpRecord  # noqa: E402
from curvechat.store.etcd import EtcdStore  # noqa: E402
from curvechat.store.etcd.status import member_statuses  # noqa: E402

from support.etcd import EtcdCluster, etcd_cluster  # noqa: E402
from support.etcd_space import defragment  # noqa: E402

MIB = 1024 * 1024
ROOM = "general"


def envelope(sender: Identity, key: bytes, chars: int, txn: str) -> bytes:
    text = ("The quick brown fox jumps over the lazy dog. " * (chars // 40 + 1))[:chars]
    env = seal_message(
        sender,
        room=ROOM,
        epoch=0,
        key=key,
        txn=txn,
        plaintext=Plaintext(text=text, ts=int(time.time() * 1000)),
    )
    return encode(env)


async def sizes(store: EtcdStore) -> tuple[int, int]:
    (status, *_), errors = await member_statuses(store.member_channels(), store.login)
    assert not errors, errors
    return status.db_size, status.db_size_in_use


async def measure(
    cluster: EtcdCluster, messages: int, chars: int, concurrency: int
) -> dict[str, Any]:
    store = EtcdStore(cluster.endpoints.split(","))
    await store.open()
    alice = Identity.generate("alice")
    key = secrets.token_bytes(32)
    try:
        await store.create_room(
            ROOM,
            [OpRecord(0, b"op" * 100, b"s" * 64)],
            [MemberChange("alice", True, True)],
            EpochRecord(0, 0, "alice"),
            [],
        )
        txns = [secrets.token_urlsafe(16) for _ in range(messages)]
        batch = [NewMessage(ROOM, "alice", t, envelope(alice, key, chars, t)) for t in txns]
        envelope_bytes = sum(len(m.envelope) for m in batch) / messages
        await asyncio.sleep(0.3)  # etcd commits its backend every 100 ms
        before = await sizes(store)
        t0 = time.perf_counter()
        queue = list(reversed(batch))

        async def sender() -> None:
            while queue:
                await store.append_messages([queue.pop()])

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        transactions = store.commits
        await asyncio.sleep(0.3)
        after = await sizes(store)
    finally:
        await store.close()
    cluster.compact()
    defragment(cluster)
    await asyncio.sleep(0.3)
    store = EtcdStore(cluster.endpoints.split(","))
    await store.open()
    try:
        compacted = await sizes(store)
    finally:
        await store.close()

    def per(grown: int) -> dict[str, float]:
        return {
            "bytes_per_message": round(grown / messages, 1),
            "messages_per_mib": round(messages * MIB / grown) if grown > 0 else 0,
        }

    return {
        "messages": messages,
        "text_chars": chars,
        "envelope_bytes": round(envelope_bytes, 1),
        "concurrency": concurrency,
        "transactions": transactions,
        "seconds": round(elapsed, 2),
        "db_size": {"before": before[0], "after": after[0], "compacted": compacted[0]},
        "db_in_use": {"before": before[1], "after": after[1], "compacted": compacted[1]},
        "file": per(after[0] - before[0]),
        "in_use": per(after[1] - before[1]),
        "compacted_defragmented": per(compacted[0] - before[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--chars", type=int, default=100, help="characters of text per message")
    ap.add_argument("--concurrency", type=int, default=1, help="concurrent senders")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    if not (1 <= args.messages <= 10_000_000 and 1 <= args.chars <= 4000):
        ap.error("--messages 1 … 10000000, --chars 1 … 4000")
    if not 1 <= args.concurrency <= 1000:
        ap.error("--concurrency 1 … 1000")
    with (
        tempfile.TemporaryDirectory(prefix="capacity-") as tmp,
        etcd_cluster(Path(tmp), extra_args=("--quota-backend-bytes", str(8 * 1024**3))) as etcd,
    ):
        result = asyncio.run(measure(etcd, args.messages, args.chars, args.concurrency))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
