"""A node starting while etcd briefly refuses (a leader change, a member
lost) retries instead of exiting, for a bounded time."""

from __future__ import annotations

import pytest

from curvechat.server import cluster
from curvechat.store import StoreUnavailable


async def test_a_brief_refusal_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "RETRY_S", 0.01)
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("etcdserver: leader changed")
        return "ok"

    assert await cluster.retrying("test", flaky) == "ok"
    assert len(calls) == 3


async def test_a_lasting_refusal_ends_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "RETRY_S", 0.01)
    monkeypatch.setattr(cluster, "START_RETRY_S", 0.05)

    async def down() -> None:
        raise StoreUnavailable("no member answers")

    with pytest.raises(StoreUnavailable, match="no member answers"):
        await cluster.retrying("test", down)


async def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "RETRY_S", 0.01)
    calls = []

    async def refused() -> None:
        calls.append(1)
        raise ValueError("name taken")

    with pytest.raises(ValueError):
        await cluster.retrying("test", refused)
    assert len(calls) == 1
