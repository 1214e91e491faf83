"""What one rogue node (one that answers anything, every second) can do to
the monitor's view of the others, in process: a sample value that is not a
number, a number no float holds, an answer that raises in the checks, an
answer of many megabytes, a new boot id on every answer, an outage every
three polls. Each poll is a failure saying why or a checked state; the
other nodes' outages and events stay, on the page and in the archive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from curvechat.dashboard.history import GAUGES, HISTOGRAMS, INCREASES, RATES
from curvechat.monitor import poller as poller_module
from curvechat.monitor.poller import NodePoller, PollFailure, parse_state
from curvechat.monitor.view import MonitorView, NodeState

HONEST, ROGUE = "http://10.0.0.1:7780", "http://10.0.0.2:7780"
T0 = 1_700_000_000_000
# the number fields of a node's sample (`dashboard.history.Sampler.sample`)
FIELDS = [
    *GAUGES,
    *RATES,
    *INCREASES,
    "cpu_percent",
    *(f"{key}_p{q}_ms" for key in HISTOGRAMS for q in (50, 99)),
]


def answer(history: list[Any], **extra: Any) -> dict[str, Any]:
    return {"node": {"name": "rogue", "boot": "r1"}, "interval_s": 1, "history": history, **extra}


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """A node whose `/api/state` answers `body["raw"]`, as it is."""
    body: dict[str, bytes] = {"raw": b"{}"}

    async def state(request: web.Request) -> web.Response:
        return web.Response(body=body["raw"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/state", state)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), body
    finally:
        await server.close()


async def poll(url: str) -> NodeState | PollFailure:
    async with aiohttp.ClientSession() as session:
        return await NodePoller(session).poll(url, since=0)


def test_a_sample_keeps_numbers_only_never_booleans() -> None:
    state = parse_state(answer([{"t": 5, "clients": True, "cpu_percent": False, "queue": 2.5}]))
    assert state.samples == [{"t": 5, "queue": 2.5}]


async def test_a_number_no_float_holds_is_no_traceback(node: Any) -> None:
    url, body = node
    text = json.dumps(answer([{"t": 5, "clients": 1}]))
    body["raw"] = text.replace('"interval_s": 1', '"interval_s": 1' + "0" * 400).encode()
    result = await poll(url)
    assert isinstance(result, NodeState), result
    assert 0 < result.interval_s <= 3600


async def test_anything_that_raises_reading_an_answer_is_a_bad_answer(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, body = node
    body["raw"] = json.dumps(answer([])).encode()

    def broken(document: Any) -> NodeState:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(poller_module, "parse_state", broken)
    result = await poll(url)
    assert isinstance(result, PollFailure) and "could not be read" in result.error, result


def honest_history(count: int) -> list[dict[str, Any]]:
    """A node's samples with every field a full-precision float."""
    now = int(time.time() * 1000)
    return [
        {"t": now - 1000 * i, **{k: 123456.78901234567 for k in FIELDS}, "store_ok": True}
        for i in range(count, 0, -1)
    ]


async def test_the_largest_honest_answer_is_read_and_four_times_it_is_not(node: Any) -> None:
    url, body = node
    honest = json.dumps(answer(honest_history(3600))).encode()  # a node's whole hour
    body["raw"] = honest
    result = await poll(url)
    assert isinstance(result, NodeState) and len(result.samples) == 3600, result
    body["raw"] = json.dumps(answer([], padding="x" * (4 * len(honest)))).encode()
    result = await poll(url)
    assert isinstance(result, PollFailure) and "too large" in result.error, result


async def max_stall(work: Any) -> float:
    """The longest the event loop went without running while `work` ran."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    try:
        await work
    finally:
        done.set()
        await task
    return max(gaps)


async def test_a_large_answer_is_parsed_without_stalling_the_loop(node: Any) -> None:
    url, body = node
    body["raw"] = json.dumps(answer(honest_history(7200))).encode()  # just under the limit

    async def on_the_loop() -> None:  # the same body decoded and checked there, to compare
        parse_state(json.loads(body["raw"]))

    inline = await max_stall(on_the_loop())
    polled = await max_stall(poll(url))
    assert polled < inline / 2, (polled, inline)


def honest_records(view: MonitorView) -> tuple[int, int, int, int]:
    page = view.overview(T0 + 10**7)
    kept = view.timeline.to_json()
    return (
        sum(o["node"] == HONEST for o in page["outages"]),
        sum(e["node"] == HONEST for e in page["events"]),
        sum(o["node"] == HONEST for o in kept["outages"]),
        sum(e["node"] == HONEST for e in kept["events"]),
    )


def honest_node_with_an_outage() -> MonitorView:
    view = MonitorView()
    view.answered(HONEST, T0, NodeState("honest", "b1"))
    view.failed(HONEST, T0 + 1000, "connection refused")
    view.failed(HONEST, T0 + 2000, "connection refused")
    view.answered(HONEST, T0 + 3000, NodeState("honest", "b2"))
    assert honest_records(view) == (1, 3, 1, 3)  # found, down, up (restarted)
    return view


def test_a_node_restarting_at_every_poll_keeps_the_others_records() -> None:
    view = honest_node_with_an_outage()
    restarts = []
    for i in range(1200):  # 20 minutes of a new boot id every second
        events = view.answered(ROGUE, T0 + 10_000 + 1000 * i, NodeState("rogue", f"boot{i}"))
        restarts += [e for e in events if e.kind == "node_restarted"]
    assert honest_records(view) == (1, 3, 1, 3)
    assert 19 <= len(restarts) <= 21, len(restarts)  # one a minute, each counting the rest
    assert "59 more restarts" in restarts[-1].detail, restarts[-1].detail


def test_a_node_flapping_keeps_the_others_records() -> None:
    view = honest_node_with_an_outage()
    at = T0 + 10_000
    for _ in range(600):  # down 2 polls, up 1: an outage every 3 s for half an hour
        view.failed(ROGUE, at, "refused")
        view.failed(ROGUE, at + 1000, "refused")
        view.answered(ROGUE, at + 2000, NodeState("rogue", "r1"))
        at += 3000
    assert honest_records(view) == (1, 3, 1, 3)
