"""The sampler and its history ring, without a node: quantiles from buckets,
rates from counters, the one-hour bound, and store outages as events."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from curvechat.dashboard.events import EventLog
from curvechat.dashboard.history import MetricHistory, Sampler, bucket_quantile
from curvechat.store import StoreUnavailable


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.01)
    assert bucket_quantile(0.7, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.9)
    assert bucket_quantile(0.5, [(0.01, 0.0), (float("inf"), 0.0)]) is None
    # beyond the last finite bound: the last finite bound
    assert bucket_quantile(0.9, [(0.01, 1.0), (float("inf"), 10.0)]) == pytest.approx(0.01)


def test_history_keeps_one_hour_and_answers_since() -> None:
    history = MetricHistory(seconds=3600, interval=1.0)
    for t in range(5000):
        history.append({"t": t})
    assert len(history.samples) == 3600
    assert history.samples[0]["t"] == 5000 - 3600
    assert [s["t"] for s in history.since(4996)] == [4997, 4998, 4999]
    assert history.since(10**9) == []


def make_registry() -> tuple[CollectorRegistry, Counter, Histogram, Gauge]:
    registry = CollectorRegistry()
    accepted = Counter("curvechat_messages_accepted_total", "", registry=registry)
    deliver = Histogram(
        "curvechat_send_deliver_seconds", "", registry=registry, buckets=(0.001, 0.01, 0.1)
    )
    clients = Gauge("curvechat_connected_clients", "", registry=registry)
    return registry, accepted, deliver, clients


def test_sampler_turns_counters_into_rates_and_histograms_into_quantiles() -> None:
    registry, accepted, deliver, clients = make_registry()
    history = MetricHistory()
    sampler = Sampler(registry, history, EventLog("n1"))
    clients.set(2)
    first = sampler.sample()
    assert first["clients"] == 2 and first["msgs_in"] is None and first["deliver_p50_ms"] is None
    accepted.inc(10)
    for _ in range(99):
        deliver.observe(0.005)
    deliver.observe(0.05)
    second = sampler.sample()
    assert second["msgs_in"] is not None and second["msgs_in"] > 0
    assert 1.0 <= second["deliver_p50_ms"] <= 10.0
    assert 10.0 <= second["deliver_p99_ms"] <= 100.0
    assert second["store_p50_ms"] is None  # no such histogram: nothing to say
    assert [s["t"] for s in history.samples] == [first["t"], second["t"]]


async def test_store_outage_and_recovery_are_events() -> None:
    registry, *_ = make_registry()
    events = EventLog("n1")
    healthy = True
    states: list[bool] = []

    async def probe() -> None:
        if not healthy:
            raise StoreUnavailable("disk I/O error")

    sampler = Sampler(
        registry, MetricHistory(), events, store_probe=probe, on_store_state=states.append
    )
    await sampler.probe_store()
    healthy = False
    await sampler.probe_store()
    await sampler.probe_store()
    assert sampler.sample()["store_ok"] is False
    healthy = True
    await sampler.probe_store()
    kinds = [(e.kind, e.level) for e in events.after(0)]
    assert kinds == [("store_unavailable", "error"), ("store_available", "info")]
    assert "disk I/O error" in events.after(0)[0].detail
    assert states == [True, False, False, True]


def test_event_log_is_bounded_and_incremental() -> None:
    log = EventLog("n1", maxlen=3)
    for i in range(5):
        log.add("client_disconnected", f"user{i} disconnected", user=f"user{i}")
    assert len(log) == 3
    assert [e.user for e in log.after(0)] == ["user2", "user3", "user4"]
    assert [e.seq for e in log.after(4)] == [5]
    assert log.after(0)[0].to_json()["node"] == "n1"


def test_clean_exits_are_not_counted_as_disconnects() -> None:
    """A client that said goodbye (`reason="left"`) is not a failure: the
    failures graph's disconnects leave it out."""
    registry = CollectorRegistry()
    disconnects = Counter("curvechat_client_disconnects_total", "", ["reason"], registry=registry)
    sampler = Sampler(registry, MetricHistory(), EventLog("n1"))
    sampler.sample()
    disconnects.labels("left").inc(29)
    disconnects.labels("disconnected").inc(1)
    disconnects.labels("timeout").inc(2)
    assert sampler.sample()["disconnects"] == 3
