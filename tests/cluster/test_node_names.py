"""Two nodes never share a registry entry: a node whose --node-name another
live node holds does not start (`node_name_taken`), a second node on the
data folder of a running one does not start either (`data_dir_in_use`),
while the same node restarted before its old lease ran out (same data
folder, here on another port) takes its entry back."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .conftest import Nodes
from support.servers import ServerProcess, free_port, serve_to_the_end


def _node(nodes: Nodes, folder: str, name: str) -> ServerProcess:
    proc = ServerProcess(
        nodes.root / folder, extra_args=("--store", nodes.url, "--node-name", name)
    )
    nodes.started.append(proc)
    return proc


def test_a_second_node_with_a_live_nodes_name_is_refused(nodes: Nodes) -> None:
    first = _node(nodes, "a", "n1").start()
    port = free_port()
    t0 = time.monotonic()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "curvechat",
            "serve",
            "--data",
            str(nodes.root / "b"),
            "--bind",
            f"tcp://127.0.0.1:{port}",
            "--store",
            nodes.url,
            "--node-name",
            "n1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    took = time.monotonic() - t0
    assert second.returncode == 1, second.stderr[-2000:]
    assert "[node_name_taken]" in second.stderr, second.stderr[-2000:]
    assert "n1" in second.stderr and "another --node-name" in second.stderr
    assert "Traceback" not in second.stderr
    assert "ready" not in second.stdout
    # Refused before it bound its port or wrote its connect string: it was
    # never live, not even for a moment.
    assert "listening on" not in second.stderr + second.stdout
    assert not (nodes.root / "b" / "connect").exists()
    assert took < 30, took
    # The first node is untouched: still registered, still serving.
    assert first.proc is not None and first.proc.poll() is None
    nodes.kill(first)
    # Restarted at once (its old lease still live), from the same folder on
    # another port: the entry is its own, so it starts.
    again = ServerProcess(nodes.root / "a", extra_args=("--store", nodes.url, "--node-name", "n1"))
    nodes.started.append(again)
    again.start()
    assert f":{again.port}/" in again.connect, again.connect


def test_a_copy_on_a_running_nodes_data_folder_leaves_its_entry_alone(nodes: Nodes) -> None:
    """Same folder, so the same key and name: before the lock, the copy took
    the running node's registry entry over, and its Ctrl-C deleted it."""
    first = nodes.start("a")
    assert first.proc is not None
    copy = serve_to_the_end(first.data, "--store", nodes.url)
    assert copy.returncode == 1, copy.stderr[-2000:]
    assert copy.stderr.splitlines() == [
        f"curvechat: error [data_dir_in_use]: the data directory {first.data} is in use by"
        f" another node (process {first.proc.pid}): stop it first, or give this one a --data"
        " of its own"
    ]
    assert copy.stdout == ""
    assert (first.data / "connect").read_text().strip() == first.connect
    # The registry still has the first node, at its own address.
    second = nodes.start("b")
    assert any(line.startswith("cluster: 2 node(s)") for line in second.stdout), second.stdout
    (listed,) = [x for x in second.stdout if x.startswith("cluster connect string: ")]
    assert sorted(listed.split(": ", 1)[1].strip().split(",")) == sorted(
        [first.connect, second.connect]
    )
