"""Cluster mode: how much of etcd's space quota is used, as gauges, on the
dashboard, and as events when it crosses 60 % and 80 %.

What it is for: etcd refuses every write once its file reaches its quota
(the NOSPACE alarm; docs/operations.md, Size quota and compaction), and
message history is what fills it. The operator needs to see it coming.

How it works: a task polls every etcd member's Status (`store/etcd/status.py`) every
`POLL_INTERVAL_S`, takes the member whose file is fullest against its
quota, and sets the `curvechat_etcd_*` gauges. The quota is the one etcd
reports (etcd 3.6 and later), else the one the node was given
(``--etcd-quota-bytes``), else etcd's default of 2 GiB. `QuotaAlarm` (no I/O)
turns each reading into threshold crossings: one event when use rises
through a threshold, and one when it falls back below it by `REARM_MARGIN`,
after which the next rise is reported again (the margin keeps a file that
hovers at a threshold from logging an event at every poll).

What it must never do: write to etcd, or stop the node when etcd does not
answer (a failed poll keeps the last reading; the store probe reports the
outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curvechat.dashboard.events import EventLog, Level
from curvechat.server.metrics import NodeMetrics
from curvechat.tasks import cancel_and_wait

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdStore
    from curvechat.store.etcd.status import MemberStatus

log = logging.getLogger("curvechat.server")

THRESHOLDS = (0.6, 0.8)
REARM_MARGIN = 0.02
POLL_INTERVAL_S = 10.0
MIN_QUOTA_BYTES = 1024**2  # what --etcd-quota-bytes accepts
MAX_QUOTA_BYTES = 1024**4
_LEVELS: dict[float, Level] = {0.6: "warning", 0.8: "error"}


@dataclass(frozen=True)
class Crossing:
    threshold: float
    rising: bool  # True: use rose to or above it; False: fell back below it


class QuotaAlarm:
    """Which thresholds a new reading crosses, given the earlier ones."""

    def __init__(
        self, thresholds: tuple[float, ...] = THRESHOLDS, margin: float = REARM_MARGIN
    ) -> None:
        self.thresholds = tuple(sorted(thresholds))
        self.margin = margin
        self.above: set[float] = set()

    def update(self, ratio: float) -> list[Crossing]:
        """Crossings, lowest threshold first when rising, highest first when falling."""
        rising = [t for t in self.thresholds if t not in self.above and ratio >= t]
        falling = [t for t in self.thresholds if t in self.above and ratio < t - self.margin]
        self.above.update(rising)
        self.above.difference_update(falling)
        return [Crossing(t, True) for t in rising] + [Crossing(t, False) for t in reversed(falling)]


@dataclass(frozen=True)
class QuotaReading:
    member: str
    db_bytes: int
    in_use_bytes: int
    quota_bytes: int
    source: str  # "etcd" (reported), "configured" or "default"

    @property
    def ratio(self) -> float:
        return self.db_bytes / self.quota_bytes if self.quota_bytes > 0 else 0.0


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def pick_reading(
    statuses: list[MemberStatus], configured: int | None, default: int
) -> QuotaReading | None:
    """The member closest to its quota, or None when no member answered."""
    readings = []
    for s in statuses:
        if s.quota:
            quota, source = s.quota, "etcd"
        elif configured:
            quota, source = configured, "configured"
        else:
            quota, source = default, "default"
        readings.append(QuotaReading(s.endpoint, s.db_size, s.db_size_in_use, quota, source))
    return max(readings, key=lambda r: r.ratio, default=None)


class CapacityWatch:
    """Polls etcd's quota use for one node (see the module docstring)."""

    def __init__(
        self,
        store: EtcdStore,
        metrics: NodeMetrics,
        events: EventLog,
        *,
        quota_bytes: int | None = None,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        if quota_bytes is not None and not MIN_QUOTA_BYTES <= quota_bytes <= MAX_QUOTA_BYTES:
            raise ValueError(f"the etcd quota must be {MIN_QUOTA_BYTES} … {MAX_QUOTA_BYTES} bytes")
        if interval <= 0:
            raise ValueError("the poll interval must be positive")
        self.store = store
        self.metrics = metrics
        self.events = events
        self.quota_bytes = quota_bytes
        self.interval = interval
        self.alarm = QuotaAlarm()
        self.last: QuotaReading | None = None
        self.polls = 0
        self._warned_mismatch = False
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> QuotaReading | None:
        """One poll of every member: the gauges and events it makes, and
        the reading (None when no member answered)."""
        from curvechat.store.etcd.status import DEFAULT_QUOTA_BYTES, member_statuses

        statuses, errors = await member_statuses(self.store.member_channels(), self.store.login)
        self.polls += 1
        for error in errors:
            log.debug("etcd status: %s", error)
        reading = pick_reading(statuses, self.quota_bytes, DEFAULT_QUOTA_BYTES)
        if reading is None:
            return None
        self._check_configured(reading)
        self.last = reading
        m = self.metrics
        m.etcd_db_bytes.set(reading.db_bytes)
        m.etcd_db_in_use_bytes.set(reading.in_use_bytes)
        m.etcd_quota_bytes.set(reading.quota_bytes)
        m.etcd_quota_used_ratio.set(reading.ratio)
        for crossing in self.alarm.update(reading.ratio):
            self._event(crossing, reading)
        return reading

    def _check_configured(self, reading: QuotaReading) -> None:
        if (
            reading.source == "etcd"
            and self.quota_bytes
            and self.quota_bytes != reading.quota_bytes
            and not self._warned_mismatch
        ):
            self._warned_mismatch = True
            log.warning(
                "--etcd-quota-bytes is %d but etcd %s reports a quota of %d: using etcd's",
                self.quota_bytes,
                reading.member,
                reading.quota_bytes,
            )

    def _event(self, crossing: Crossing, r: QuotaReading) -> None:
        pct = round(crossing.threshold * 100)
        used = (
            f"{r.ratio * 100:.0f} % ({fmt_bytes(r.db_bytes)} of {fmt_bytes(r.quota_bytes)},"
            f" {fmt_bytes(r.in_use_bytes)} in use, on {r.member})"
        )
        if crossing.rising:
            self.events.add(
                f"etcd_quota_{pct}",
                f"etcd is at {used} of its space quota: at 100 % it refuses every write;"
                " compact and defragment, or add room shards",
                level=_LEVELS.get(crossing.threshold, "warning"),
            )
        else:
            self.events.add("etcd_quota_below", f"etcd back below {pct} % of its quota: {used}")

    def state(self) -> dict[str, Any] | None:
        """The last reading, for /api/state (None before the first)."""
        r = self.last
        if r is None:
            return None
        return {
            "db_bytes": r.db_bytes,
            "in_use_bytes": r.in_use_bytes,
            "quota_bytes": r.quota_bytes,
            "used": round(r.ratio, 4),
            "quota_source": r.source,
            "member": r.member,
            "thresholds": list(self.alarm.thresholds),
        }

    # --- the task ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="etcd-capacity")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll()
            except Exception:
                # A bug: say so, and keep polling.
                log.exception("etcd capacity poll failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
