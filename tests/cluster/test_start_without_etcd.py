"""A node started while etcd is down for a moment waits for it, as
operations.md says ("every 0.5 s for up to 30 s"): it gave up at once
(`store_unavailable`, Connection refused)."""

from __future__ import annotations

import threading
from pathlib import Path

from support.etcd import EtcdCluster
from support.servers import ServerProcess


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
