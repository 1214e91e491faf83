"""Signals that mean what they say, on a real node with real client engines:
reconnects are counted per session (one user with two sessions is not a
reconnect storm), a clean exit is a goodbye and not a failure, and the node
keeps its name across restarts (a restart is a reconnect, not a failover)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import zmq
from prometheus_client.parser import text_string_to_metric_families

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.raw import RawClient
from support.servers import ServerProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# Pings every 0.2 s, a 2 s liveness window: ten pings a second over the two
# sessions, without spurious reconnects on a busy machine.
QUICK: dict[str, Any] = {"ping_interval": 0.2, "liveness": 10}
SERVE = (sys.executable, "-m", "curvechat", "serve")


async def scrape(server: ServerProcess) -> Samples:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(
    server: ServerProcess, check: Callable[[Samples], bool], timeout: float = 15.0
) -> Samples:
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(server)
            if check(samples):
                return samples
            await asyncio.sleep(0.1)


async def api_state(server: ServerProcess) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/api/state") as resp,
    ):
        assert resp.status == 200
        state: dict[str, Any] = await resp.json()
        return state


def events_of(state: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in state["events"] if e["kind"] == kind]


async def test_two_sessions_of_one_user_are_not_reconnects(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A TUI that reconnected once, and a `tail` started later with the same
    key: the node used to keep the last reported count per key, so the two
    sessions' pings (1, 0, 1, 0, …) read as a reconnect every other ping."""
    tui, tui_events = await clients.make("alice", server.connect, home_name="tui", **QUICK)
    tui.conn.drop("cut by the test")  # one real reconnect, before the idle time
    await tui_events.until(lambda: tui.conn.reconnects == 1 and tui.conn.live)
    await eventually(server, lambda s: value(s, "curvechat_client_reconnects_total") == 1)

    tail, _ = await clients.make("alice", server.connect, home_name="tail", **QUICK)
    # Both sessions idle, pinging: the TUI reports 1 reconnect, `tail` 0.
    pings = value(await scrape(server), "curvechat_requests_total", type="ping", code="ok")
    await eventually(
        server,
        lambda s: value(s, "curvechat_requests_total", type="ping", code="ok") >= pings + 30,
    )
    samples = await scrape(server)
    real = tui.conn.reconnects + tail.conn.reconnects  # normally 1: the cut above
    assert value(samples, "curvechat_client_reconnects_total") == real
    assert value(samples, "curvechat_client_failovers_total") == 0
    state = await api_state(server)
    assert len(events_of(state, "client_reconnected")) == real, events_of(
        state, "client_reconnected"
    )
    assert not events_of(state, "client_failover")
    rows = [c for c in state["connections"] if c["user"] == "alice" and c["state"] == "live"]
    assert len(rows) == 2 and rows[0]["key"] == rows[1]["key"], rows  # one transport key
    assert sorted(r["reconnects"] for r in rows) == sorted(
        [tui.conn.reconnects, tail.conn.reconnects]
    )

    # A real reconnect of either session is still counted, once.
    tail.conn.drop("cut by the test")
    async with asyncio.timeout(20):
        while not (tail.conn.reconnects >= 1 and tail.conn.live):
            await asyncio.sleep(0.05)
    real = tui.conn.reconnects + tail.conn.reconnects
    await eventually(server, lambda s: value(s, "curvechat_client_reconnects_total") >= real)
    await asyncio.sleep(1.0)  # more pings from both: nothing more is counted
    samples = await scrape(server)
    assert value(samples, "curvechat_client_reconnects_total") == real
    assert len(events_of(await api_state(server), "client_reconnected")) == real


async def test_a_clean_exit_is_not_a_failure(server: ServerProcess, clients: ClientFactory) -> None:
    """A client that quits says goodbye: its row is `left` (greyed on the
    page), the metric says `left`, and no warning is logged; a client that is
    killed is still a `disconnected` failure."""
    await clients.make("alice", server.connect, **QUICK)
    bob, _ = await clients.make("bob", server.connect, **QUICK)
    carol, _ = await clients.make("carol", server.connect, **QUICK)
    await eventually(server, lambda s: value(s, "curvechat_connected_clients") == 3)

    await clients.close(bob)  # `curvechat send` returning, the TUI quitting
    samples = await eventually(
        server,
        lambda s: value(s, "curvechat_client_disconnects_total", reason="left") == 1,
    )
    assert value(samples, "curvechat_connected_clients") == 2
    await asyncio.sleep(0.5)  # the socket's close reaches the node: still no failure
    samples = await scrape(server)
    assert value(samples, "curvechat_client_disconnects_total", reason="disconnected") == 0
    state = await api_state(server)
    (row,) = [c for c in state["connections"] if c["user"] == "bob"]
    assert row["state"] == "left" and row["gone_since"], row
    assert not [e for e in state["events"] if e["user"] == "bob"], state["events"]

    await carol.conn.close(goodbye=False)  # killed: no goodbye
    await clients.close(carol)
    samples = await eventually(
        server,
        lambda s: value(s, "curvechat_client_disconnects_total", reason="disconnected") == 1,
    )
    assert value(samples, "curvechat_client_disconnects_total", reason="left") == 1
    state = await api_state(server)
    (row,) = [c for c in state["connections"] if c["user"] == "carol"]
    assert row["state"] == "disconnected", row
    assert [e["kind"] for e in state["events"] if e["user"] == "carol"] == ["client_disconnected"]
    assert [e["level"] for e in events_of(state, "client_disconnected")] == ["warning"]


def test_arrivals_are_counted_once_per_session(server: ServerProcess) -> None:
    """What a new session's first ping means, told by `prev_node` (the node
    of the client's previous connection) or, from a client that does not
    say, by whether its key was here before."""
    here = health(server)["node"]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    keys = [Identity.generate(f"u{i}") for i in range(5)]
    opened: list[RawClient] = []

    def session(identity: Identity, *pings: tuple[int, str]) -> RawClient:
        raw = RawClient(ctx, server.connect, identity)
        opened.append(raw)
        for reconnects, prev_node in pings:
            reply = raw.request(m.Ping(t=1, reconnects=reconnects, prev_node=prev_node))
            assert isinstance(reply, m.Pong) and reply.node == here, reply
        return raw

    try:
        first = session(keys[0], (0, ""), (0, ""))  # a first connection: nothing
        session(keys[1], (2, "elsewhere-1"), (2, "elsewhere-1"))  # failover, once
        session(keys[2], (1, here), (1, here))  # back here after a restart: a reconnect
        session(keys[0], (1, ""), (1, ""))  # no prev_node, key seen here: a reconnect
        session(keys[3], (3, ""))  # no prev_node, key new here: a failover
        first.request(m.Ping(t=1, reconnects=2))  # within a session, increases count
        # A ping may add at most 10, and one event a minute per connection.
        first.request(m.Ping(t=1, reconnects=2**31))
        session(keys[4], (1, "x\n[forged] line"))  # not a node's name: not shown
        samples = asyncio.run(scrape(server))
        state = asyncio.run(api_state(server))
        reply = first.request(m.Bye())
        assert isinstance(reply, m.ByeAck), reply
    finally:
        for raw in opened:
            raw.close()
        ctx.term()
    assert value(samples, "curvechat_client_reconnects_total") == 1 + 1 + 2 + 10
    assert value(samples, "curvechat_client_failovers_total") == 3
    details = [e["detail"] for e in state["events"] if e["kind"].startswith("client_")]
    assert len(details) == 6, details
    assert "arrived from elsewhere-1 after 2 reconnect(s)" in details[0]
    assert "reconnected after this node restarted (reconnect #1)" in details[1]
    assert details[2].endswith("reconnected (reconnect #1)")
    assert "arrived elsewhere after 3 reconnect(s)" in details[3]
    assert details[4].endswith("reconnected (reconnect #2)")
    assert details[5].endswith("arrived elsewhere after 1 reconnect(s)"), details[5]


def health(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz", timeout=5) as r:
        data: dict[str, Any] = json.load(r)
        return data


async def test_a_node_keeps_its_name_and_a_restart_is_a_reconnect(
    tmp_path: Path, clients: ClientFactory
) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        name = (tmp_path / "node" / "node.id").read_text().strip()
        assert health(server)["node"] == name
        alice, events = await clients.make("alice", server.connect, **QUICK)
        assert alice.status.node == name
        boot = health(server)["boot"]

        server.kill()  # and back, with the same data dir
        server.start()
        assert health(server)["node"] == name and health(server)["boot"] != boot
        await events.until(lambda: alice.conn.reconnects == 1 and alice.conn.live)
        assert alice.status.node == name
        samples = await eventually(
            server, lambda s: value(s, "curvechat_client_reconnects_total") == 1
        )
        assert value(samples, "curvechat_client_failovers_total") == 0
        state = await api_state(server)
        (event,) = events_of(state, "client_reconnected")
        assert "after this node restarted" in event["detail"], event
        assert event["node"] == name
        assert not events_of(state, "client_failover")
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()

    # --node-name names it, and the name is kept for the next start.
    named = ServerProcess(tmp_path / "node", extra_args=("--node-name", "edge-1")).start()
    try:
        assert health(named)["node"] == "edge-1"
    finally:
        assert named.stop() == 0
    assert (tmp_path / "node" / "node.id").read_text().strip() == "edge-1"
    again = ServerProcess(tmp_path / "node").start()
    try:
        assert health(again)["node"] == "edge-1"
    finally:
        assert again.stop() == 0

    # A name that would not survive a URL path or a metric tag is refused.
    bad = subprocess.run(
        [*SERVE, "--data", str(tmp_path / "x"), "--node-name", "a b/c"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2, bad
    assert "--node-name" in bad.stderr + bad.stdout
    assert not (tmp_path / "x" / "node.id").exists()
