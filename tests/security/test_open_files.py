"""A node raises its limit on open files to what the system lets it: each
client connection holds a descriptor, and at the usual soft limit (1,024)
that many connections from one host kept everyone else out."""

from __future__ import annotations

import resource
from pathlib import Path

from support.servers import ServerProcess


def soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


def test_the_node_raises_its_open_files_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        node = ServerProcess(tmp_path / "node").start()  # inherits the low limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert node.proc is not None
        want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
        assert soft_limit(node.proc.pid) == want > low
    finally:
        assert node.stop() == 0
