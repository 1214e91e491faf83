"""Single node: the store's disk reserve, as gauges and events.

What it is for: the embedded store refuses new content once its disk is
nearly full (`store/reserve.py`). The operator must learn that before the
users do, and when it is over. Every `interval` seconds (one: a statvfs is
a few microseconds, and the disk can fill in seconds) this measures the
disk and sets `curvechat_store_disk_free_bytes`,
`curvechat_store_disk_reserve_bytes` and `curvechat_store_full`; when the
reserve is crossed it adds an event (`store_full`, an error, or
`store_space_ok`), which the log, the dashboard and the monitor show.

What it must never do: refuse anything itself (the store does), or stop
the node when the disk cannot be measured.
"""

from __future__ import annotations

import asyncio
import logging

from curvechat.dashboard.events import EventLog
from curvechat.server.metrics import NodeMetrics
from curvechat.store.reserve import DiskReserve, fmt_mib
from curvechat.tasks import cancel_and_wait

log = logging.getLogger("curvechat.server")

POLL_INTERVAL_S = 1.0


class DiskWatch:
    def __init__(
        self,
        reserve: DiskReserve,
        metrics: NodeMetrics,
        events: EventLog,
        *,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        if interval <= 0:
            raise ValueError("the poll interval must be positive")
        self.reserve = reserve
        self.metrics = metrics
        self.events = events
        self.interval = interval
        self._told = False  # what the last event said: low or not
        self._task: asyncio.Task[None] | None = None

    def poll(self) -> None:
        """Measure once: the gauges, and an event if the reserve was crossed
        (by this measure or by a write's since the last poll)."""
        rule = self.reserve.rule
        self.reserve.measure()
        m = self.metrics
        if rule.free is not None:
            m.store_disk_free_bytes.set(rule.free)
        m.store_disk_reserve_bytes.set(rule.min_free)
        m.store_full.set(1 if rule.low else 0)
        if rule.low == self._told:
            return
        self._told = rule.low
        free = fmt_mib(rule.free or 0)
        if rule.low:
            self.events.add(
                "store_full",
                f"the store's disk has {free} free, under the {fmt_mib(rule.min_free)} kept free:"
                " new messages, users and rooms are refused (store_full) until space is freed",
                level="error",
            )
        else:
            self.events.add(
                "store_space_ok",
                f"the store's disk has {free} free again: new messages are taken",
            )

    def start(self) -> None:
        self.poll()
        self._task = asyncio.create_task(self._run(), name="curvechat-disk-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.poll()
            except Exception:  # a bug here must not end the watch
                log.exception("disk watch poll failed")
