"""The monitor's own history: samples kept per node across the node's
restarts (`MonitorView`), in SQLite across the monitor's restarts
(`Archive`, `load_view`), bounded in number and age, and a damaged file
set aside rather than stopping the monitor."""

from __future__ import annotations

import time
from pathlib import Path

from curvechat.monitor.app import load_view
from curvechat.monitor.archive import FILE, Archive
from curvechat.monitor.timeline import Health
from curvechat.monitor.view import MonitorView, NodeState

URL = "http://127.0.0.1:7780"


def now_ms() -> int:
    return int(time.time() * 1000)


def state(boot: str, times: list[int], name: str = "node") -> NodeState:
    return NodeState(name=name, boot=boot, samples=[{"t": t, "clients": 1.0} for t in times])


def test_history_survives_a_node_restart() -> None:
    view = MonitorView(history_s=3600)
    view.add_node(URL, source="command line")
    t0 = now_ms() - 60_000
    view.answered(URL, t0 + 3000, state("b1", [t0, t0 + 1000, t0 + 2000]))
    assert view.last_sample_t(URL) == t0 + 2000
    # an answer overlapping what is kept adds only what is new
    view.answered(URL, t0 + 4000, state("b1", [t0 + 2000, t0 + 3000]))
    view.failed(URL, t0 + 5000, "connection refused")
    view.failed(URL, t0 + 6000, "connection refused")
    # the node restarted: its own history starts over, the monitor's does not
    view.answered(URL, t0 + 20_000, state("b2", [t0 + 19_000, t0 + 20_000]))
    kept = [s["t"] for s in view.history_since(0)[URL]]
    assert kept == [t0, t0 + 1000, t0 + 2000, t0 + 3000, t0 + 19_000, t0 + 20_000]
    overview = view.overview(t0 + 20_000)
    [node] = overview["nodes"]
    assert node["health"] == "up" and node["latest"]["t"] == t0 + 20_000
    [outage] = overview["outages"]
    assert outage["duration_ms"] == 15_000 and outage["restarted"]
    assert len(view.take_unsaved()) == 6 and view.take_unsaved() == []


def test_samples_too_close_or_from_the_future_are_dropped() -> None:
    view = MonitorView()
    view.add_node(URL, source="command line")
    at = now_ms()
    flood = list(range(at - 10_000, at, 10))  # a node answering 100 samples a second
    view.answered(URL, at, state("b1", [*flood, at + 3_600_000]))
    kept = view.history_since(0)[URL]
    assert len(kept) == 20  # one per 500 ms
    assert all(s["t"] < at for s in kept)


def test_the_monitor_restarting_keeps_history_and_timeline(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.open()
    view = load_view(archive, history_s=3600, interval=1.0)
    view.add_node(URL, source="command line")
    t0 = now_ms() - 120_000
    view.answered(URL, t0 + 2000, state("b1", [t0, t0 + 1000, t0 + 2000]))
    view.failed(URL, t0 + 3000, "connection refused")
    view.failed(URL, t0 + 4000, "connection refused")
    archive.save(view.take_unsaved(), view.timeline.to_json())
    for name in (FILE, f"{FILE}-wal", f"{FILE}-shm"):  # the log holds the same rows
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    archive.close()
    assert (tmp_path / FILE).stat().st_mode & 0o777 == 0o600

    archive = Archive(tmp_path)
    archive.open()
    again = load_view(archive, history_s=3600, interval=1.0)
    assert [s["t"] for s in again.history_since(0)[URL]] == [t0, t0 + 1000, t0 + 2000]
    assert again.last_sample_t(URL) == t0 + 2000  # where the first poll resumes
    assert again.timeline.tracks[URL].health is Health.DOWN
    assert again.nodes[URL].source == "earlier run"
    kinds = [e["kind"] for e in again.overview(now_ms())["events"]]
    assert kinds[0] == "monitor_started" and "node_down" in kinds
    archive.close()


def test_old_samples_are_pruned(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.open()
    now = now_ms()
    archive.save([(URL, {"t": now - 7200_000 + i}) for i in range(100)])
    archive.save([(URL, {"t": now - 10 + i}) for i in range(5)], prune_before=now - 3600_000)
    assert archive.count() == 5
    _, samples = archive.load(0)
    assert len(samples[URL]) == 5
    archive.forget(URL)
    assert archive.count() == 0
    archive.close()


def test_a_damaged_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(b"this is not a database" * 100)
    archive = Archive(tmp_path)
    archive.open()
    assert (tmp_path / f"{FILE}.bad-1").exists()
    assert archive.load(0) == (None, {})
    archive.close()
