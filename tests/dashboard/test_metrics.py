"""`/metrics` of a real node against the traffic a test sent: exact counts of
requests by type and code, messages accepted and delivered, latency
histograms, auth failures, disconnects and reconnects, process metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect

from support.clients import ClientFactory
from support.servers import ServerProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# Slow liveness settings: no spurious reconnects on a busy machine.
CALM: dict[str, Any] = {"ping_interval": 0.5, "liveness": 10}


async def scrape(server: ServerProcess) -> Samples:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(
    server: ServerProcess, check: Callable[[Samples], bool], timeout: float = 15.0
) -> Samples:
    """Scrape until `check` holds (bounded); returns the scrape that passed."""
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(server)
            if check(samples):
                return samples
            await asyncio.sleep(0.1)


async def test_metrics_count_the_traffic(server: ServerProcess, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", server.connect, **CALM)
    bob, bob_events = await clients.make("bob", server.connect, **CALM)
    await clients.make("carol", server.connect, **CALM)
    await alice.create_room("metrics", ["bob", "carol"])
    for i in range(7):
        await alice.send("metrics", f"a{i}")
    for i in range(5):
        await bob.send("metrics", f"b{i}")

    # An unregistered key may connect but not list rooms: an auth failure.
    address = parse_connect(server.connect)[0]
    ctx = zmq.asyncio.Context()
    stranger = ctx.socket(zmq.DEALER)
    public, secret = zmq.curve_keypair()
    stranger.curve_serverkey = address.server_key.encode()
    stranger.curve_publickey, stranger.curve_secretkey = public, secret
    stranger.linger = 0
    stranger.connect(address.endpoint)
    # A client with a wrong server key fails the CURVE handshake.
    impostor = ctx.socket(zmq.DEALER)
    impostor.curve_serverkey = zmq.curve_keypair()[0]
    impostor.curve_publickey, impostor.curve_secretkey = zmq.curve_keypair()
    impostor.linger = 0
    try:
        await stranger.send(encode_request(1, m.ListRooms()))
        async with asyncio.timeout(10):
            reply = decode_server_frame(await stranger.recv())
        assert isinstance(reply.msg, m.Error) and reply.msg.code == "not_registered"
        impostor.connect(address.endpoint)
        samples = await eventually(
            server,
            lambda s: (
                value(s, "curvechat_connected_clients") == 4
                and value(s, "curvechat_auth_failures_total", reason="handshake") >= 1
                and value(s, "curvechat_client_rtt_seconds_count") >= 3
            ),
        )
    finally:
        stranger.close()
        impostor.close()
        ctx.term()

    assert value(samples, "curvechat_messages_accepted_total") == 12
    assert value(samples, "curvechat_requests_total", type="send", code="ok") == 12
    assert value(samples, "curvechat_requests_total", type="create_room", code="ok") == 1
    assert value(samples, "curvechat_requests_total", type="hello", code="ok") == 3
    assert value(samples, "curvechat_requests_total", type="register", code="ok") == 3
    assert value(samples, "curvechat_requests_total", type="list_rooms", code="not_registered") == 1
    assert value(samples, "curvechat_auth_failures_total", reason="not_registered") == 1
    assert value(samples, "curvechat_handshakes_total", result="failed") >= 1
    # every message went to the two other members, each on one connection
    assert value(samples, "curvechat_messages_delivered_total") == 24
    assert value(samples, "curvechat_send_ack_seconds_count") == 12
    assert value(samples, "curvechat_send_deliver_seconds_count") == 12
    assert value(samples, "curvechat_store_commit_seconds_count") == 12
    assert value(samples, "curvechat_store_committed_messages_total") == 12
    assert 1 <= value(samples, "curvechat_store_commits_total") <= 12
    assert value(samples, "curvechat_store_up") == 1
    assert value(samples, "curvechat_requests_total", type="ping", code="ok") >= 1
    assert value(samples, "process_resident_memory_bytes") > 1_000_000
    assert value(samples, "process_cpu_seconds_total") > 0
    assert 10 < value(samples, "process_open_fds") < value(samples, "process_max_fds")
    assert value(samples, "curvechat_node_start_time_seconds") > 1_600_000_000

    # The stranger's connection closed: a disconnect, and three clients left.
    samples = await eventually(
        server,
        lambda s: (
            value(s, "curvechat_client_disconnects_total", reason="disconnected") == 1
            and value(s, "curvechat_connected_clients") == 3
        ),
    )
    assert value(samples, "curvechat_client_reconnects_total") == 0

    # bob's connection is cut; he reconnects and his next ping says so.
    bob.conn.drop("cut by the test")
    await bob_events.until(lambda: bob.conn.reconnects == 1 and bob.conn.live)
    samples = await eventually(server, lambda s: value(s, "curvechat_client_reconnects_total") == 1)
    assert value(samples, "curvechat_client_failovers_total") == 0
    assert value(samples, "curvechat_client_disconnects_total", reason="disconnected") == 2
    assert value(samples, "curvechat_messages_accepted_total") == 12


async def test_outbox_depth_reported_in_pings(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect, **CALM)
    await clients.make("bob", server.connect, **CALM)
    await alice.create_room("q", ["bob"])
    txn = await alice.send("q", "queued", wait=False)
    assert alice.conn.outbox_depth() == len(alice.pending())  # the engine's outbox
    await alice.wait_ack(str(txn), 10)
    assert alice.conn.outbox_depth() == 0
    alice.conn.outbox_depth = lambda: 5  # as if five messages were stuck
    samples = await eventually(server, lambda s: value(s, "curvechat_client_outbox_messages") == 5)
    assert value(samples, "curvechat_connected_clients") == 2
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/api/state") as resp,
    ):
        rows = (await resp.json())["connections"]
    assert {r["user"]: r["outbox"] for r in rows} == {"alice": 5, "bob": 0}


def test_the_dashboard_samples_no_listing_of_open_files() -> None:
    """The dashboard reads `registry` every second on the event loop; the
    count of open files (a listing of /proc/self/fd, one entry per
    connection) is served at /metrics only."""
    from curvechat.dashboard.history import read_registry
    from curvechat.server.metrics import NodeMetrics

    metrics = NodeMetrics()
    sampled, _ = read_registry(metrics.registry)
    assert sampled["process_cpu_seconds_total"] > 0
    assert sampled["process_resident_memory_bytes"] > 1_000_000
    assert "process_open_fds" not in sampled
    scraped, _ = read_registry(metrics.scrape_registry)
    assert scraped["process_open_fds"] > 0
