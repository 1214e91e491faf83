"""The short chaos run of `make test`: three chat nodes on a 3-member etcd,
engine clients in several rooms sending through fault-injecting proxies, and
in about a minute every kind of fault once (kill -9 of a node, of the etcd
leader and of a follower, quorum lost, a node stopped past its lease, a node
partitioned away, clients cut, latency, compaction past a lagging node, the
etcd leader partitioned from the other members, every node restarted in turn)
plus a small reconnect storm. The checker must find nothing wrong, and the faults
must have bitten (sends timed out while quorum was lost, a node re-listed)."""

from __future__ import annotations

from pathlib import Path

from chaos.run import Config, run


async def test_short_mixed_chaos_run(tmp_path: Path) -> None:
    config = Config(
        duration=66,
        seed=7,
        clients=9,
        rooms=3,
        schedule="short",
        storm_clients=100,
        storms=[0.08],
    )
    report = await run(config, tmp_path / "work", tmp_path / "results")
    folder = Path(report["folder"])
    summary = (folder / "summary.txt").read_text()
    assert (folder / "report.json").stat().st_size > 0
    assert (folder / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = report["result"]["counts"]
    for name, ok in report["criteria"].items():
        assert ok, f"{name} failed:\n{summary}"
    assert report["passed"]
    # The faults were real: every one was injected, and they bit.
    names = {f["name"] for f in report["faults"] if not f.get("error")}
    assert {
        "kill-node",
        "kill-etcd-leader",
        "kill-etcd-follower",
        "lose-quorum",
        "pause-node",
        "isolate-node",
        "cut-clients",
        "cut-node-link",
        "latency+loss",
        "compact-lagging",
        "partition-etcd-leader",
        "rolling-restart",
        "reconnect-storm",
    } <= names, summary
    assert counts["acked"] > 200, summary
    assert counts["ambiguous"] >= 1, summary  # sends timed out while quorum was lost
    assert sum(report["relists"].values()) >= 1, summary  # the lagging node re-listed
    # The cut node link bit: the other nodes found the link into the node
    # whose link was cut (one that owns rooms) unreachable while it was cut
    # (its heartbeat needs no traffic) and took over its rooms' sends.
    (cut,) = [f for f in report["faults"] if f["name"] == "cut-node-link"]
    assert any(
        f["owner"] == cut["target"] and cut["start"] <= f["t"] <= cut["end"] + 3
        for f in report["link_fallbacks"]
    ), summary
    assert report["storms"][0]["all_reconnected"], summary
    assert not report["node_log_problems"], summary
