"""server/metrics.py's `observe_all` against prometheus_client's own
`observe`: it reads the histogram's private fields, so a prometheus_client
that changes them must fail here, not count wrong."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from curvechat.server.metrics import observe_all

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)


def _samples(histogram: Histogram, registry: CollectorRegistry) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "amounts",
    [
        [],
        [0.0005],
        [0.001, 0.001, 0.005],  # on the bounds: `le` is inclusive
        [0.0, 0.002, 0.007, 0.05, 0.5, 5.0, 50.0, 0.0011, 0.0049],
        [0.01] * 1000,
    ],
)
def test_observe_all_counts_as_observe_does(amounts: list[float]) -> None:
    one_reg, all_reg = CollectorRegistry(), CollectorRegistry()
    one = Histogram("t_seconds", "t", buckets=BUCKETS, registry=one_reg)
    each = Histogram("t_seconds", "t", buckets=BUCKETS, registry=all_reg)
    for a in amounts:
        one.observe(a)
    observe_all(each, amounts)
    assert _samples(each, all_reg) == pytest.approx(_samples(one, one_reg))
    assert _samples(each, all_reg)["t_seconds_count[]"] == len(amounts)
