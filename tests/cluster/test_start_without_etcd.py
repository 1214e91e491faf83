"""A node started while etcd is down for a moment waits for it, as
operations.md says ("every 0.5 s for up to 30 s"): it gave up at once
(`store_unavailable`, Connection refused)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from support.etcd import EtcdCluster
from support.servers import ServerProcess, free_port


def test_a_node_started_before_etcd_waits_for_it(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", size=1)
    later = threading.Timer(2.0, cluster.start)
    later.start()
    node = ServerProcess(tmp_path / "node", extra_args=("--store", f"{cluster.url}/late"))
    try:
        node.start(timeout=60)
        assert "retrying" in node.log()
    finally:
        later.join()
        node.stop()
        for member in cluster.members:
            member.stop()


def test_a_node_waiting_for_etcd_stops_at_once_when_told(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM while the node retries etcd at start: it stops then
    (cleanly, status 0), not when the 30 s of retries are over."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        log_path = tmp_path / f"node-{sig.name}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "curvechat", "serve", "--data", str(tmp_path / sig.name)),
                    *("--bind", f"tcp://127.0.0.1:{free_port()}", "--http", ""),
                    *("--store", f"etcd://127.0.0.1:{free_port()}/nobody"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            deadline = time.monotonic() + 20
            while "retrying" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "retrying" in log_path.read_text()
            proc.send_signal(sig)
            assert proc.wait(timeout=5) == 0, log_path.read_text()
        finally:
            proc.kill()
            proc.wait()
