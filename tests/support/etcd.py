"""Real etcd processes (the Debian `etcd-server` package) on free loopback
ports: one member or a 3-member cluster, waited for by polling their health
with a bounded deadline, and always stopped."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from curvechat.store.etcd import EtcdStore

from support.servers import free_port

ETCD = shutil.which("etcd") or "etcd"  # Debian package: etcd-server


class EtcdMember:
    def __init__(self, name: str, data: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.data = data
        self.extra_args = extra_args
        self.client_port = free_port()
        self.peer_port = free_port()
        # The port the other members are told to dial (a proxy in front of
        # `peer_port`, when the peer links are to be cut); by default itself.
        self.advertised_peer_port = self.peer_port
        self.log_path = data.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.initial_cluster = ""  # set by EtcdCluster.start, reused by restart

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def advertised_peer_url(self) -> str:
        return f"http://127.0.0.1:{self.advertised_peer_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen(
            [
                ETCD,
                "--name",
                self.name,
                "--data-dir",
                str(self.data),
                "--listen-client-urls",
                self.client_url,
                "--advertise-client-urls",
                self.client_url,
                "--listen-peer-urls",
                self.peer_url,
                "--initial-advertise-peer-urls",
                self.advertised_peer_url,
                "--initial-cluster",
                initial_cluster,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "curvechat-test",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1) as resp:
                return b'"health":"true"' in resp.read()
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: hung, while the kernel still accepts its TCP connections."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        """Start again on the same ports and data (it rejoins its cluster)."""
        self.kill()
        self.start(self.initial_cluster, state="existing")


class EtcdCluster:
    def __init__(self, root: Path, size: int = 1, extra_args: tuple[str, ...] = ()) -> None:
        self.members = [EtcdMember(f"m{i}", root / f"m{i}", extra_args) for i in range(size)]

    @property
    def endpoints(self) -> str:
        """host:port,host:port,… for `etcd://` and EtcdStore."""
        return ",".join(m.endpoint for m in self.members)

    @property
    def url(self) -> str:
        return "etcd://" + self.endpoints

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        initial = ",".join(f"{m.name}={m.advertised_peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial
            m.start(initial)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, members: list[EtcdMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(members or self.members)
        while pending:
            pending = [m for m in pending if not m.healthy()]
            for m in pending:
                if not m.alive():
                    raise RuntimeError(f"etcd {m.name} exited:\n{m.log_path.read_text()[-3000:]}")
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"etcd {[m.name for m in pending]} not healthy in {timeout} s")
            if pending:
                # Bounded poll: a short blocking wait on the process, not a sleep.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    assert pending[0].proc is not None
                    pending[0].proc.wait(0.05)

    def leader(self) -> EtcdMember:
        """The member that is the Raft leader now (from each member's v3 status)."""
        for m in self.members:
            if not m.alive():
                continue
            req = urllib.request.Request(
                m.client_url + "/v3/maintenance/status", data=b"{}", method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    status = json.loads(resp.read())
            except (urllib.error.URLError, OSError):
                continue
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return m
        raise RuntimeError("no leader")

    def compact(self) -> int:
        """Compact (physically) at the current revision, through the first live
        member's HTTP gateway; returns that revision."""
        member = next(m for m in self.members if m.alive())
        rev = int(_post(member, "/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        _post(member, "/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def _post(member: EtcdMember, path: str, body: dict[str, object]) -> dict[str, Any]:
    req = urllib.request.Request(
        member.client_url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


@contextlib.contextmanager
def etcd_cluster(
    root: Path, size: int = 1, extra_args: tuple[str, ...] = ()
) -> Iterator[EtcdCluster]:
    """A fresh etcd cluster on loopback; `extra_args` go to every member."""
    cluster = EtcdCluster(root, size, extra_args)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@contextlib.asynccontextmanager
async def fresh_store(cluster: EtcdCluster) -> AsyncIterator[EtcdStore]:
    """An EtcdStore of `cluster`, open, alone on a key prefix of its own."""
    s = EtcdStore(cluster.endpoints.split(","), prefix=f"/t-{uuid.uuid4().hex}/")
    await s.open()
    try:
        yield s
    finally:
        await s.close()
