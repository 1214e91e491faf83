"""What writing acknowledged sends costs the client's cache: out of the
outbox and into the room's messages (client/outboxrows.py `record_sent`),
in batches as the outbox acks them.

    python -m bench.acked_writes 6000 100
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from curvechat.client.cache import Cache
from curvechat.protocol import messages as m

TEXT = "x" * 200


def per_message_us(count: int, batch: int) -> float:
    """Mean µs per message of `record_sent`, `batch` acks at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(Path(tmp) / "cache.db", b"k" * 32)
        cache.ensure_room("r")
        txns = [f"t{i:08d}" for i in range(count)]
        cache.enqueue_many("r", txns, [TEXT] * count)
        items = cache.outbox()
        t0 = time.perf_counter()
        for i in range(0, count, batch):
            part = items[i : i + batch]
            acks = [
                m.SendAck(room="r", txn=it.txn, seq=i + k + 1, ts=0) for k, it in enumerate(part)
            ]
            cache.record_sent(
                "r", "alice", [(it, ack, 0) for it, ack in zip(part, acks, strict=True)]
            )
        elapsed = time.perf_counter() - t0
        assert cache.outbox_count() == 0
        cache.close()
    return 1e6 * elapsed / count


def main(argv: list[str]) -> None:
    count, batch = (int(a) for a in [*argv, "6000", "100"][:2])
    runs = sorted(per_message_us(count, batch) for _ in range(5))
    print(
        f"{count:,} acked sends, {batch} per batch: {runs[2]:.1f} µs per message"
        f" (median of 5; {runs[0]:.1f}–{runs[-1]:.1f})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
