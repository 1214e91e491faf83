"""Fixtures for cluster mode: a real 3-member etcd cluster on loopback (one per
module) and chat nodes (`curvechat serve --store etcd://…`) on it, each test
under its own key prefix. Every node must stop cleanly on SIGINT with no
traceback in its log, like the single-node `server` fixture."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.etcd import EtcdCluster, etcd_cluster
from support.servers import ServerProcess


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd3"), size=3) as cluster:
        yield cluster


class Nodes:
    """Starts chat nodes on one etcd cluster and key prefix."""

    def __init__(self, root: Path, etcd: EtcdCluster) -> None:
        self.root = root
        self.etcd = etcd
        self.prefix = f"t-{uuid.uuid4().hex}"
        self.url = f"{etcd.url}/{self.prefix}"
        self.started: list[ServerProcess] = []
        self.killed: set[int] = set()

    def start(
        self, name: str, endpoints: str | None = None, extra: tuple[str, ...] = ()
    ) -> ServerProcess:
        """A node on the cluster (or only on `endpoints`, host:port,…), with
        `extra` arguments for `curvechat serve`."""
        url = self.url if endpoints is None else f"etcd://{endpoints}/{self.prefix}"
        proc = ServerProcess(self.root / name, extra_args=("--store", url, *extra))
        self.started.append(proc)
        return proc.start()

    def kill(self, proc: ServerProcess) -> None:
        proc.kill()
        self.killed.add(id(proc))

    def stop_and_check(self) -> None:
        """Stop every node (Ctrl-C); each not killed must exit 0, and no log
        may hold a traceback or an unretrieved exception."""
        codes = [(p, p.stop()) for p in self.started]
        for proc, code in codes:
            log = proc.log()
            if id(proc) not in self.killed:
                assert code == 0, f"node exited with {code}:\n{log[-3000:]}"
            for marker in ("Traceback", "never retrieved", "did not finish within"):
                assert marker not in log, f"{marker!r} in a node's log:\n{log[-3000:]}"


@pytest.fixture
def nodes(tmp_path: Path, etcd3: EtcdCluster) -> Iterator[Nodes]:
    factory = Nodes(tmp_path, etcd3)
    try:
        yield factory
    finally:
        factory.stop_and_check()
