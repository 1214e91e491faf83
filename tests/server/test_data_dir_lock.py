"""One node per data directory: a second `curvechat serve` on a directory
a running node holds stops at once with `data_dir_in_use`, naming it, and
touches nothing of the first (its connect file, its store, its service);
a node killed with -9 leaves no lock behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

from support.cli import CliUser
from support.servers import ServerProcess, serve_to_the_end

KEPT = ("connect", "node.id", "curvechat.db", "http.token", "node.lock")


def snapshot(data: Path) -> dict[str, tuple[bytes, int]]:
    """The first node's files: their bytes and when each last changed."""
    return {
        name: ((data / name).read_bytes(), (data / name).stat().st_mtime_ns)
        for name in sorted(os.listdir(data))
        if name in KEPT or name.endswith((".key", ".pub"))
    }


def refused_line(data: Path, pid: int) -> str:
    return (
        f"curvechat: error [data_dir_in_use]: the data directory {data} is in use by"
        f" another node (process {pid}): stop it first, or give this one a --data of its own"
    )


def test_a_second_node_on_a_data_directory_in_use_stops_touching_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert server.proc is not None
    before = snapshot(server.data)
    assert "connect" in before and "curvechat.db" in before, before
    t0 = time.monotonic()
    second = serve_to_the_end(server.data)
    took = time.monotonic() - t0
    assert second.returncode == 1, second.stderr[-2000:]
    assert second.stderr.splitlines() == [refused_line(server.data, server.proc.pid)]
    assert second.stdout == ""  # not ready, no connect string, nothing listening
    assert took < 15, took
    assert snapshot(server.data) == before
    assert (server.data / "connect").read_text().strip() == server.connect
    # The first node serves on, at the address its connect file gives.
    alice = CliUser("alice", tmp_path / "alice", server)
    assert "registered as alice" in alice.run("init", "--user", "alice").stdout
    assert alice.run("create", "general").returncode == 0


def test_a_node_killed_with_sigkill_leaves_no_lock_behind(tmp_path: Path) -> None:
    data = tmp_path / "node"
    first = ServerProcess(data).start()
    first.kill()
    again = ServerProcess(data)
    try:
        again.start()
        assert (data / "connect").read_text().strip() == again.connect
        assert f":{again.port}/" in again.connect
        # The lock is the new node's now.
        assert again.proc is not None
        copy = serve_to_the_end(data)
        assert copy.returncode == 1, copy.stderr[-2000:]
        assert copy.stderr.splitlines() == [refused_line(data, again.proc.pid)]
        assert (data / "connect").read_text().strip() == again.connect
    finally:
        code = again.stop()
    assert code == 0, again.log()[-3000:]
    assert "Traceback" not in again.log()
