"""An hour of one node's metric history, in memory, for the dashboard's graphs.

A `Sampler` task reads the node's Prometheus registry every `interval`
seconds and turns counters into rates and histograms into p50/p99 (from the
bucket counts gained over the last few samples, interpolated within a
bucket as Prometheus' `histogram_quantile` does). Each sample is a flat dict
of numbers (None where there is nothing to say, e.g. no sends, no latency)
kept in a bounded ring.

It must never block the event loop for long or grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry

from curvechat.dashboard.events import EventLog
from curvechat.tasks import cancel_and_wait

log = logging.getLogger("curvechat.dashboard")

SAMPLE_INTERVAL_S = 1.0
HISTORY_SECONDS = 3600
QUANTILE_WINDOW = 5  # samples whose histogram gains make up one p50/p99 point
STORE_PROBE_TIMEOUT_S = 2.0

Sample = dict[str, Any]
Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), ascending

HISTOGRAMS = {
    "deliver": "curvechat_send_deliver_seconds",
    "ack": "curvechat_send_ack_seconds",
    "store": "curvechat_store_commit_seconds",
}
RATES = {
    "msgs_in": "curvechat_messages_accepted_total",
    "msgs_out": "curvechat_messages_delivered_total",
    "requests": "curvechat_requests_total",
}
INCREASES = {
    "reconnects": "curvechat_client_reconnects_total",
    "auth_failures": "curvechat_auth_failures_total",
    "disconnects": "curvechat_client_disconnects_total",
}
GAUGES = {
    "clients": "curvechat_connected_clients",
    "queue": "curvechat_request_queue_depth",
    "rss_bytes": "process_resident_memory_bytes",
}
CPU_SECONDS = "process_cpu_seconds_total"
# Samples left out of the sums: not failures (a client that said goodbye).
NOT_FAILURES = frozenset({("curvechat_client_disconnects_total", "reason", "left")})


def read_registry(registry: CollectorRegistry) -> tuple[dict[str, float], dict[str, Buckets]]:
    """Every sample's value summed over its labels (but NOT_FAILURES), and
    every histogram's buckets."""
    totals: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_bucket") and "le" in s.labels:
                le = float(s.labels["le"])
                per = buckets.setdefault(s.name[: -len("_bucket")], {})
                per[le] = per.get(le, 0.0) + s.value
            elif not any(s.name == n and s.labels.get(k) == v for n, k, v in NOT_FAILURES):
                totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals, {name: sorted(per.items()) for name, per in buckets.items()}


def bucket_quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of cumulative `buckets`, None if they hold no observation.
    Values in the +Inf bucket are reported as the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank and count > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = (upper if not math.isinf(upper) else lower), count
    return lower


def bucket_gain(now: Buckets, before: Buckets | None) -> Buckets:
    if before is None or len(before) != len(now):
        return now
    return [(le, max(0.0, c - b)) for (le, c), (_, b) in zip(now, before, strict=True)]


class MetricHistory:
    """A ring of samples, oldest first."""

    def __init__(self, seconds: float = HISTORY_SECONDS, interval: float = SAMPLE_INTERVAL_S):
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=max(1, math.ceil(seconds / interval)))

    def append(self, sample: Sample) -> None:
        self.samples.append(sample)

    def since(self, t_ms: int) -> list[Sample]:
        """Samples taken after `t_ms` (Unix ms), oldest first."""
        out: list[Sample] = []
        for sample in reversed(self.samples):
            if sample["t"] <= t_ms:
                break
            out.append(sample)
        out.reverse()
        return out

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


class Sampler:
    """Takes one sample per interval into `history`; also probes the store and
    logs its transitions (unavailable / available again) to `events`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        history: MetricHistory,
        events: EventLog,
        *,
        store_probe: Callable[[], Awaitable[None]] | None = None,
        on_store_state: Callable[[bool], None] | None = None,
        before_sample: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.history = history
        self.events = events
        self._store_probe = store_probe
        self._on_store_state = on_store_state
        self._before_sample = before_sample
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, dict[str, float]] | None = None
        self._windows: dict[str, deque[Buckets]] = {
            key: deque(maxlen=QUANTILE_WINDOW + 1) for key in HISTOGRAMS
        }
        self.store_ok: bool | None = None
        self.store_error = ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.probe_store()
                self.sample()
            except Exception:  # a bad sample must not end the history
                log.exception("metric sample failed")
            next_at += self.history.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def probe_store(self) -> None:
        if self._store_probe is None:
            return
        try:
            async with asyncio.timeout(STORE_PROBE_TIMEOUT_S):
                await self._store_probe()
        except Exception as exc:  # any failure of the probe means "not usable now"
            error = str(exc) or type(exc).__name__
            if self.store_ok is not False:
                self.events.add("store_unavailable", f"store unavailable: {error}", level="error")
            self.store_ok, self.store_error = False, error
        else:
            if self.store_ok is False:
                self.events.add("store_available", "store reachable again")
            self.store_ok, self.store_error = True, ""
        if self._on_store_state is not None:
            self._on_store_state(self.store_ok)

    def sample(self) -> Sample:
        if self._before_sample is not None:
            self._before_sample()
        now = time.time()
        totals, buckets = read_registry(self.registry)
        sample: Sample = {"t": int(now * 1000)}
        for key, name in GAUGES.items():
            sample[key] = totals.get(name)
        last = self._last
        dt = now - last[0] if last is not None else 0.0
        for key, name in RATES.items():
            if last is None or dt <= 0:
                sample[key] = None
            else:
                sample[key] = max(0.0, totals.get(name, 0.0) - last[1].get(name, 0.0)) / dt
        for key, name in INCREASES.items():
            sample[key] = (
                None if last is None else max(0.0, totals.get(name, 0.0) - last[1].get(name, 0.0))
            )
        if last is None or dt <= 0 or CPU_SECONDS not in totals:
            sample["cpu_percent"] = None
        else:
            used = totals[CPU_SECONDS] - last[1].get(CPU_SECONDS, 0.0)
            sample["cpu_percent"] = max(0.0, 100.0 * used / dt)
        for key, name in HISTOGRAMS.items():
            window = self._windows[key]
            window.append(buckets.get(name, []))
            gained = bucket_gain(window[-1], window[0] if len(window) > 1 else None)
            if len(window) == 1:
                gained = [(le, 0.0) for le, _ in gained]  # nothing seen yet to compare
            for q in (50, 99):
                value = bucket_quantile(q / 100, gained)
                sample[f"{key}_p{q}_ms"] = None if value is None else value * 1000
        sample["store_ok"] = self.store_ok
        self._last = (now, totals)
        self.history.append(sample)
        return sample
