"""The crypto of a page of messages on two threads.

What it is for: catching up is bound by Ed25519 verification, which PyNaCl
runs in C with the interpreter's lock released; a page split in two, half
on a worker thread and half on the caller's, uses a second core.

It must never decide anything: the trust core chose each job's key and
sender key (`trust.core.OpenJob`), and judges the results.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from curvechat.client.trust.jobs import OpenJob, open_in_turn
from curvechat.crypto.envelope import Plaintext
from curvechat.crypto.errors import CryptoError

SPLIT_MIN = 32
"""Jobs below this many are done in turn (a thread hand-off costs more)."""

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curvechat-open")
        return _pool


def open_split(jobs: Sequence[OpenJob]) -> list[Plaintext | CryptoError]:
    """`open_in_turn`, the second half of the jobs on a worker thread."""
    if len(jobs) < SPLIT_MIN:
        return open_in_turn(jobs)
    half = len(jobs) // 2
    later = _worker().submit(open_in_turn, jobs[half:])
    first = open_in_turn(jobs[:half])
    return first + later.result()
