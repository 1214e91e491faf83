"""Metrics pushed to a real InfluxDB 1.x over HTTP (line protocol), read back
with InfluxQL; and the pusher's URL handling, escaping and failure handling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from curvechat.dashboard.events import EventLog
from curvechat.server.influx import InfluxPusher, line_protocol, write_url

if TYPE_CHECKING:
    from .conftest import InfluxD
from support.clients import ClientFactory
from support.servers import ServerProcess, free_port

DB = "curvechat_test"


def rows(result: dict[str, Any]) -> list[list[Any]]:
    series = result["results"][0].get("series", [])
    return [row for s in series for row in s["values"]]


async def test_node_pushes_metrics_to_influxdb(
    influxd: InfluxD, tmp_path: Path, clients: ClientFactory
) -> None:
    await influxd.query(f'CREATE DATABASE "{DB}"')
    server = ServerProcess(
        tmp_path / "node",
        extra_args=("--influx", influxd.url, "--influx-db", DB, "--influx-interval", "0.5"),
    ).start()
    try:
        alice, _ = await clients.make("alice", server.connect)
        await clients.make("bob", server.connect)
        await alice.create_room("pushed", ["bob"])
        for i in range(4):
            await alice.send("pushed", f"m{i}")

        query = 'SELECT last("value") FROM "curvechat_messages_accepted_total" GROUP BY "node"'
        async with asyncio.timeout(20):
            while True:  # until a push after the sends has landed (pushes every 0.5 s)
                found = rows(await influxd.query(query, DB))
                if found and found[0][1] == 4:
                    break
                await asyncio.sleep(0.2)
        result = await influxd.query(query, DB)
        assert result["results"][0]["series"][0]["tags"]["node"]
        sends = rows(
            await influxd.query(
                'SELECT last("value") FROM "curvechat_requests_total"'
                " WHERE \"type\" = 'send' AND \"code\" = 'ok'",
                DB,
            )
        )
        assert sends and sends[0][1] == 4
        buckets = rows(
            await influxd.query(
                'SELECT last("value") FROM "curvechat_send_ack_seconds_bucket"'
                " WHERE \"le\" = '+Inf'",
                DB,
            )
        )
        assert buckets and buckets[0][1] == 4
        memory = rows(
            await influxd.query('SELECT last("value") FROM "process_resident_memory_bytes"', DB)
        )
        assert memory and memory[0][1] > 1_000_000
    finally:
        await clients.close_all()
        code = server.stop()
    log = server.log()
    assert code == 0 and "Traceback" not in log, log[-3000:]
    assert "InfluxDB push failed" not in log


def test_write_url_forms() -> None:
    assert write_url("http://h:8086/write?db=x") == "http://h:8086/write?db=x&precision=ms"
    assert write_url("http://h:8086", "y") == "http://h:8086/write?db=y&precision=ms"
    assert write_url("http://h:8086/") == "http://h:8086/write?db=curvechat&precision=ms"
    assert write_url("https://h/influx/write?db=a&u=me", "b") == (
        "https://h/influx/write?db=b&u=me&precision=ms"
    )
    with pytest.raises(ValueError):
        write_url("h:8086")


def test_line_protocol_escapes_and_tags() -> None:
    registry = CollectorRegistry()
    c = Counter("curvechat_odd_total", "odd labels", ["why"], registry=registry)
    c.labels("a b,c=d").inc(3)
    text = line_protocol(registry, "node 1", 1234)
    line = next(x for x in text.splitlines() if x.startswith("curvechat_odd_total,"))
    assert line == r"curvechat_odd_total,node=node\ 1,why=a\ b\,c\=d value=3.0 1234"


async def test_push_failure_is_an_event_not_a_crash() -> None:
    events = EventLog("n1")
    registry = CollectorRegistry()
    pusher = InfluxPusher(
        registry, f"http://127.0.0.1:{free_port()}", node="n1", interval=60, events=events
    )
    pusher.start()
    try:
        assert await pusher.push() is False
        assert await pusher.push() is False
    finally:
        await pusher.stop()
    assert pusher.failures >= 2
    assert [e.kind for e in events.after(0)] == ["influx_unavailable"]  # once per outage
