"""The monitor's HTTP on both sides, in process: polling a node (its token
sent, every failure a sentence, a malformed answer refused) and serving the
page (behind the nodes' own HTTP guard: token, Host check, headers)."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from curvechat.monitor import poller as poller_module
from curvechat.monitor.poller import NodePoller, PollFailure, parse_state
from curvechat.monitor.timeline import Timeline
from curvechat.monitor.view import MonitorView, NodeState
from curvechat.monitor.web import MonitorWeb
from curvechat.server.httpguard import HttpGuard

from support.servers import free_port

TOKEN = "t" * 43


def node_state(**extra: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "now": now,
        "node": {"name": "alpha", "boot": "b1", "started_at": now - 5000, "store_ok": True},
        "interval_s": 1.0,
        "connections": [{"user": "alice"}],
        "history": [{"t": now - 1000, "clients": 3.0}, {"t": now, "clients": 4.0}],
        "events": [],
        **extra,
    }


@pytest.fixture
async def fake_node() -> AsyncIterator[tuple[str, list[web.Request], dict[str, Any]]]:
    """A node's `/api/state`, answering as `behaviour` says."""
    seen: list[web.Request] = []
    behaviour: dict[str, Any] = {"status": 200, "body": node_state()}

    async def state(request: web.Request) -> web.Response:
        seen.append(request)
        if behaviour.get("raw") is not None:
            return web.Response(
                body=behaviour["raw"],
                content_type="application/json",
                headers=behaviour.get("headers"),
            )
        return web.json_response(behaviour["body"], status=behaviour["status"])

    app = web.Application()
    app.router.add_get("/api/state", state)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen, behaviour
    finally:
        await server.close()


async def test_a_poll_sends_the_token_and_reads_the_state(fake_node: Any) -> None:
    url, seen, _ = fake_node
    async with aiohttp.ClientSession() as session:
        result = await NodePoller(session, TOKEN).poll(url, since=1234)
    assert isinstance(result, NodeState)
    assert (result.name, result.boot, result.store_ok) == ("alpha", "b1", True)
    assert [s["clients"] for s in result.samples] == [3.0, 4.0]
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen[0].query["since"] == "1234"


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ({"status": 401, "body": {"error": "unauthorized"}}, "refused the monitor's token"),
        ({"status": 421, "body": {}}, "does not answer to the host name"),
        ({"status": 503, "body": {}}, "answered HTTP 503"),
        ({"raw": b"<html>"}, "not JSON"),
        ({"raw": b"[" * 100_000 + b"]" * 100_000}, "nests too deeply"),
        # 32 KB that would unpack to 32 MB: not unpacked, refused
        (
            {"raw": gzip.compress(b" " * 32_000_000), "headers": {"Content-Encoding": "gzip"}},
            "compressed",
        ),
        ({"status": 200, "body": {"node": {"name": "x"}}}, "names no node or boot id"),
        ({"status": 200, "body": [1, 2]}, "not a curvechat node's state"),
    ],
)
async def test_a_poll_that_fails_says_why(
    fake_node: Any, behaviour: dict[str, Any], expected: str
) -> None:
    url, _, current = fake_node
    current.update(behaviour)
    async with aiohttp.ClientSession() as session:
        result = await NodePoller(session, TOKEN).poll(url, since=0)
    assert isinstance(result, PollFailure) and expected in result.error, result


async def test_a_poll_of_nothing_or_of_a_silent_node(monkeypatch: pytest.MonkeyPatch) -> None:
    async with aiohttp.ClientSession() as session:
        refused = await NodePoller(session).poll(f"http://127.0.0.1:{free_port()}", 0)
        assert refused == PollFailure("unreachable (connection refused)")

        async def hang(request: web.Request) -> web.Response:
            await asyncio.Event().wait()  # never answers
            raise AssertionError

        app = web.Application()
        app.router.add_get("/api/state", hang)
        server = TestServer(app)
        await server.start_server()
        monkeypatch.setattr(poller_module, "TIMEOUT_S", 0.2)
        try:
            silent = await NodePoller(session).poll(str(server.make_url("")), 0)
        finally:
            await server.close()
    assert silent == PollFailure("no answer within 0.2 s")


def test_only_numbers_are_kept_from_a_node() -> None:
    body = node_state(
        history=[
            {"t": 5, "clients": 1, "evil": "<script>", "nested": {"a": 1}, "inf": float("inf")},
            {"t": 7, "clients": 10**310},  # an int no float can hold: dropped, not raised on
            {"t": "6"},
            {"t": True},
            "junk",
        ]
    )
    state = parse_state(body)
    assert state.samples == [{"t": 5, "clients": 1}, {"t": 7}]
    assert not hasattr(state, "connections")  # user names are never kept


@pytest.fixture
async def monitor_page() -> AsyncIterator[TestClient[Any, Any]]:
    view = MonitorView(Timeline())
    view.add_node("http://10.0.0.1:7780", source="command line")
    view.answered("http://10.0.0.1:7780", int(time.time() * 1000), parse_state(node_state()))
    guard = HttpGuard.for_bind("127.0.0.1", TOKEN, require_token=True)
    app = MonitorWeb(view, lambda: {"boot": "m1", "source": "command line"}).app(guard)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_the_page_is_behind_the_guard(monitor_page: TestClient[Any, Any]) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = await monitor_page.get("/api/overview")
    assert resp.status == 401
    resp = await monitor_page.get("/api/overview", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await monitor_page.get("/api/overview", headers={**auth, "Host": "evil.test"})
    assert resp.status == 421
    resp = await monitor_page.get("/api/overview", headers=auth)
    assert resp.status == 200
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["summary"]["state"] == "up" and body["monitor"]["boot"] == "m1"
    assert "alice" not in await resp.text()  # the nodes' connection tables are not passed on
    resp = await monitor_page.get("/api/history?since=0", headers=auth)
    assert [s["clients"] for s in (await resp.json())["nodes"]["http://10.0.0.1:7780"]] == [3, 4]
    resp = await monitor_page.get("/api/history?since=x", headers=auth)
    assert resp.status == 400
    # the page and its code hold no data: open, so that the page can ask for the token
    for path, kind in [
        ("/", "text/html"),
        ("/static/monitor.js", "text/javascript"),
        ("/static/shared.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
        ("/static/monitor.css", "text/css"),
    ]:
        resp = await monitor_page.get(path)
        assert resp.status == 200 and resp.content_type == kind, path
    assert (await monitor_page.get("/static/app.py")).status == 404  # only the listed files
    assert (await monitor_page.get("/healthz")).status == 200
