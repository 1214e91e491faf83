"""etcd's space quota: the gauges read a real etcd's use, the 60 % and 80 %
events fire once per crossing on an etcd with a 4 MiB quota being filled
(and again after the space was freed and filled anew), and a node started
with --etcd-quota-bytes shows it on /metrics and in /api/state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aetcd import rpc  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from curvechat.dashboard.events import EventLog
from curvechat.server.capacity import (
    CapacityWatch,
    Crossing,
    QuotaAlarm,
    QuotaReading,
    pick_reading,
)
from curvechat.server.metrics import NodeMetrics
from curvechat.store import EpochRecord, MemberChange, NewMessage, OpRecord
from curvechat.store.etcd import EtcdStore
from curvechat.store.etcd.status import MemberStatus, member_statuses, reported_quota

from support.etcd import EtcdCluster, etcd_cluster, fresh_store
from support.etcd_space import defragment, delete_prefix
from support.servers import ServerProcess, free_port, serve_refuses

MIB = 1024 * 1024
QUOTA = 4 * MIB


@pytest.fixture(scope="module")
def small_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    root = tmp_path_factory.mktemp("etcd-quota")
    with etcd_cluster(root, extra_args=("--quota-backend-bytes", str(QUOTA))) as cluster:
        yield cluster


@pytest.fixture
async def store(small_etcd: EtcdCluster) -> AsyncIterator[EtcdStore]:
    async with fresh_store(small_etcd) as s:
        yield s


def gateway_status(cluster: EtcdCluster) -> dict[str, Any]:
    member = cluster.members[0]
    req = urllib.request.Request(
        member.client_url + "/v3/maintenance/status", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


async def make_room(store: EtcdStore, room: str) -> None:
    ops, changes = [OpRecord(0, b"op", b"sig")], [MemberChange("alice", True, True)]
    await store.create_room(room, ops, changes, EpochRecord(0, 0, "alice"), [])


async def write(store: EtcdStore, room: str, count: int, size: int = 2000) -> None:
    """`count` messages of `size` bytes, from concurrent senders (group commit)."""
    await asyncio.gather(
        *(
            store.append_messages([NewMessage(room, "alice", uuid.uuid4().hex, b"x" * size)])
            for _ in range(count)
        )
    )


async def settled_poll(
    watch: CapacityWatch, above: int = 0, deadline_s: float = 5.0
) -> QuotaReading:
    """Poll until etcd's backend has committed the writes (it commits every
    100 ms): the reading's size is past `above`, or steady for two polls."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        reading = await watch.poll()
        assert reading is not None
        if reading.db_bytes > above and (last is not None and last.db_bytes == reading.db_bytes):
            return reading
        if time.monotonic() > deadline:
            return reading
        last = reading
        await asyncio.sleep(0.12)


# --- no etcd ---------------------------------------------------------------------


def test_alarm_fires_once_per_crossing_and_rearms_below_the_margin() -> None:
    alarm = QuotaAlarm((0.6, 0.8), margin=0.02)
    table = [
        (0.10, []),
        (0.59, []),
        (0.60, [Crossing(0.6, True)]),
        (0.70, []),
        (0.59, []),  # not 2 % below: still above, no event
        (0.61, []),
        (0.85, [Crossing(0.8, True)]),
        (0.95, []),
        (0.50, [Crossing(0.8, False), Crossing(0.6, False)]),
        (0.62, [Crossing(0.6, True)]),
        (0.90, [Crossing(0.8, True)]),
        (0.30, [Crossing(0.8, False), Crossing(0.6, False)]),
        (0.81, [Crossing(0.6, True), Crossing(0.8, True)]),  # one jump: both, lowest first
    ]
    for ratio, expected in table:
        assert alarm.update(ratio) == expected, ratio


def test_reported_quota_is_read_from_an_unknown_field() -> None:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    plain = rpc.StatusResponse(dbSize=5, dbSizeInUse=4, version="3.4.23").SerializeToString()
    assert reported_quota(plain) == 0  # etcd 3.4: no quota
    newer = plain + varint(12 << 3) + varint(8 * 1024**3)  # etcd 3.6: dbSizeQuota = 12
    parsed = rpc.StatusResponse()
    parsed.ParseFromString(newer)
    assert parsed.dbSize == 5
    assert reported_quota(parsed.SerializeToString()) == 8 * 1024**3
    for bad in (b"\x80", b"\x12\x05ab", plain + varint(12 << 3), plain + b"\x1b"):
        assert reported_quota(bad) == 0


def test_pick_reading_takes_the_fullest_member_and_the_quota_etcd_reports() -> None:
    statuses = [MemberStatus("a:1", 100, 90), MemberStatus("b:1", 300, 250)]
    r = pick_reading(statuses, None, 1000)
    assert r is not None and (r.member, r.quota_bytes, r.source) == ("b:1", 1000, "default")
    r = pick_reading(statuses, 600, 1000)
    assert r is not None and (r.ratio, r.source) == (0.5, "configured")
    r = pick_reading([*statuses, MemberStatus("c:1", 200, 200, quota=250)], 600, 1000)
    assert r is not None and (r.member, r.source, r.ratio) == ("c:1", "etcd", 0.8)
    assert pick_reading([], 600, 1000) is None


def test_watch_refuses_a_quota_out_of_range() -> None:
    for bad in (0, -1, 1000, 2 * 1024**4):
        with pytest.raises(ValueError):
            CapacityWatch(None, NodeMetrics(), EventLog("n"), quota_bytes=bad)  # type: ignore[arg-type]


# --- a real etcd -----------------------------------------------------------------


async def test_gauges_follow_a_real_etcd(store: EtcdStore, small_etcd: EtcdCluster) -> None:
    metrics, events = NodeMetrics(), EventLog("n1")
    watch = CapacityWatch(store, metrics, events, quota_bytes=QUOTA)
    first = await settled_poll(watch)
    status = gateway_status(small_etcd)
    assert first.db_bytes == int(status["dbSize"])
    assert first.in_use_bytes == int(status["dbSizeInUse"])
    assert (first.quota_bytes, first.source) == (QUOTA, "configured")  # etcd 3.4 does not say
    await make_room(store, "r")
    await write(store, "r", 200)  # 200 × 2000 B of envelopes: at least 400 kB more
    grown = await settled_poll(watch, above=first.db_bytes + 400_000)
    assert grown.db_bytes >= first.db_bytes + 400_000
    assert grown.db_bytes == int(gateway_status(small_etcd)["dbSize"])
    values = {
        s.name: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name.startswith("curvechat_etcd_")
    }
    assert values == {
        "curvechat_etcd_db_bytes": grown.db_bytes,
        "curvechat_etcd_db_in_use_bytes": grown.in_use_bytes,
        "curvechat_etcd_quota_bytes": QUOTA,
        "curvechat_etcd_quota_used_ratio": pytest.approx(grown.db_bytes / QUOTA),
    }
    state = watch.state()
    assert state is not None and state["db_bytes"] == grown.db_bytes
    assert state["used"] == round(grown.db_bytes / QUOTA, 4)
    assert len(events) == 0  # far below 60 %


async def test_filling_the_quota_fires_each_event_once(
    store: EtcdStore, small_etcd: EtcdCluster
) -> None:
    events = EventLog("n1")
    watch = CapacityWatch(store, NodeMetrics(), events, quota_bytes=QUOTA)
    await make_room(store, "big")

    async def fill_to(room: str, target: float) -> float:
        ratio = (await settled_poll(watch)).ratio
        while ratio < target:
            await write(store, room, 40)  # ~2 % of the quota
            ratio = (await settled_poll(watch)).ratio
            for _ in range(2):  # polls in between change nothing
                await watch.poll()
        return ratio

    def kinds() -> list[str]:
        return [e.kind for e in events.after(0)]

    assert await fill_to("big", 0.82) < 0.95
    assert kinds() == ["etcd_quota_60", "etcd_quota_80"]
    levels = [e.level for e in events.after(0)]
    assert levels == ["warning", "error"]
    assert "of 4.0 MiB" in events.after(0)[0].detail

    # Free the space as an operator would: delete, compact, defragment.
    assert delete_prefix(small_etcd, store.prefix.encode()) > 0
    small_etcd.compact()
    defragment(small_etcd)
    low = await settled_poll(watch)
    assert low.ratio < 0.5, low
    assert kinds()[2:] == ["etcd_quota_below", "etcd_quota_below"]
    assert [e.detail.split(" of its quota")[0] for e in events.after(2)] == [
        "etcd back below 80 %",
        "etcd back below 60 %",
    ]

    # Filled again: reported again, once.
    await make_room(store, "big2")
    await fill_to("big2", 0.65)
    assert kinds()[4:] == ["etcd_quota_60"]
    # leave the module's etcd empty for the next test
    delete_prefix(small_etcd, store.prefix.encode())
    small_etcd.compact()
    defragment(small_etcd)


def test_node_shows_the_quota(tmp_path: Path, small_etcd: EtcdCluster) -> None:
    url = f"{small_etcd.url}/t-{uuid.uuid4().hex}"
    node = ServerProcess(
        tmp_path / "n1", extra_args=("--store", url, "--etcd-quota-bytes", str(QUOTA))
    )
    node.start()
    try:
        base = f"http://127.0.0.1:{node.http_port}"
        deadline = time.monotonic() + 10
        quota: dict[str, Any] | None = None
        while quota is None:
            with urllib.request.urlopen(base + "/api/state", timeout=5) as resp:
                quota = json.loads(resp.read())["node"]["etcd_quota"]
            assert time.monotonic() < deadline, "no etcd quota reading in /api/state"
            if quota is None:  # bounded: a short wait on the process, not a sleep
                assert node.proc is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(0.1)
        assert quota["quota_bytes"] == QUOTA and quota["quota_source"] == "configured"
        assert 0 < quota["db_bytes"] <= QUOTA
        assert quota["used"] == round(quota["db_bytes"] / QUOTA, 4)
        assert quota["member"] == small_etcd.members[0].endpoint
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        values = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("curvechat_etcd_")
        }
        assert values["curvechat_etcd_quota_bytes"] == QUOTA
        assert 0 < values["curvechat_etcd_db_bytes"] <= QUOTA
        assert 0 < values["curvechat_etcd_db_in_use_bytes"] <= values["curvechat_etcd_db_bytes"]
        assert 0 < values["curvechat_etcd_quota_used_ratio"] < 1
    finally:
        code = node.stop()
    assert code == 0
    log = node.log()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--etcd-quota-bytes", "4194304"], "--etcd-quota-bytes needs --store"),
        (["--store", "etcd://h:2379", "--etcd-quota-bytes", "5"], "must be 1048576 …"),
        (["--store", "etcd://h:2379", "--etcd-quota-bytes", "-1"], "must be 1048576 …"),
        (["--store", "etcd://h:2379", "--etcd-quota-bytes", str(2**41)], "must be 1048576 …"),
    ],
)
def test_serve_refuses_a_bad_quota(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    serve_refuses(args, expected, capsys, tmp_path)


async def test_a_member_that_does_not_answer_is_left_out(small_etcd: EtcdCluster) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    s = EtcdStore([small_etcd.members[0].endpoint, dead], prefix=f"/q-{uuid.uuid4().hex}/")
    await s.open()
    try:
        statuses, errors = await member_statuses(s.member_channels(), s.login)
        assert [st.endpoint for st in statuses] == [small_etcd.members[0].endpoint]
        assert len(errors) == 1 and dead in errors[0]
        events = EventLog("n1")
        reading = await CapacityWatch(s, NodeMetrics(), events).poll()
        assert reading is not None and reading.member == small_etcd.members[0].endpoint
        assert (reading.quota_bytes, reading.source) == (2 * 1024**3, "default")
    finally:
        await s.close()
