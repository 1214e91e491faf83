"""What storing one epoch key and reading the room's keys costs the client's
cache, for a room that already has N epochs (client/trustrows.py).

    python -m bench.epoch_keys 100 1000 10000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from curvechat.client.cache import Cache

ROUNDS = 100


def per_key_ms(epochs: int) -> float:
    """Mean ms of one `put_epoch_key` followed by one `epoch_records`."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(Path(tmp) / "cache.db", b"k" * 32)
        with cache._tx():
            for epoch in range(epochs):
                cache.put_epoch_key("r", epoch, epoch, bytes(32), "alice")
        cache.epoch_records("r")
        t0 = time.perf_counter()
        for epoch in range(epochs, epochs + ROUNDS):
            cache.put_epoch_key("r", epoch, epoch, bytes(32), "alice")
            cache.epoch_records("r")
        elapsed = time.perf_counter() - t0
        cache.close()
    return 1000 * elapsed / ROUNDS


def main(argv: list[str]) -> None:
    for arg in argv or ["100", "1000", "10000"]:
        epochs = int(arg)
        print(f"{epochs:>7,} epochs: {per_key_ms(epochs):.3f} ms per new key and read")


if __name__ == "__main__":
    main(sys.argv[1:])
