"""`curvechat serve --store etcds://…` on a real etcd with TLS, client
certificates and authentication on (support/etcd_tls.py): two nodes work
(clients on different nodes talk through etcd's watch, health and metrics
report), and a node given credentials or a TLS set-up that etcd does not
accept refuses to start with one line naming the code and what to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Nodes
from .test_two_nodes import scrape
from support.clients import ClientFactory
from support.etcd_tls import ALLOWED_PREFIX, PASSWORDS, TlsEtcd, tls_etcd
from support.servers import ServerProcess, free_port


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEtcd]:
    with tls_etcd(tmp_path_factory.mktemp("etcd-tls")) as etcd:
        yield etcd


def write_password(path: Path, password: str) -> Path:
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


class SecureNodes(Nodes):
    """Nodes on the TLS etcd as the etcd user ``curvechat`` (password from a
    file), each test under its own prefix inside the user's role."""

    def __init__(self, root: Path, etcd: TlsEtcd) -> None:
        super().__init__(root, etcd)
        self.prefix = f"{ALLOWED_PREFIX.strip('/')}/t-{uuid.uuid4().hex}"
        self.url = f"{etcd.url}/{self.prefix}"
        pki = etcd.pki
        password = write_password(root / "etcd-password", PASSWORDS["curvechat"])
        self.flags = [
            "--etcd-ca", str(pki.ca), "--etcd-cert", str(pki.stranger_cert),
            "--etcd-key", str(pki.stranger_key),
            "--etcd-user", "curvechat", "--etcd-password-file", str(password),
        ]  # fmt: skip

    def start(self, name: str, endpoints: str | None = None) -> ServerProcess:
        proc = ServerProcess(self.root / name, extra_args=("--store", self.url, *self.flags))
        self.started.append(proc)
        return proc.start()


@pytest.fixture
def secure_nodes(tmp_path: Path, secure_etcd: TlsEtcd) -> Iterator[SecureNodes]:
    factory = SecureNodes(tmp_path, secure_etcd)
    try:
        yield factory
    finally:
        factory.stop_and_check()


def get(node: ServerProcess, path: str) -> tuple[int, dict[str, str]]:
    url = f"http://127.0.0.1:{node.http_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


async def test_two_nodes_on_tls_etcd_with_auth(
    secure_nodes: SecureNodes, clients: ClientFactory
) -> None:
    """The stranger's certificate names no etcd user: everything the nodes do
    in etcd (transactions, the registry lease, the cross-node watch) is done
    as the user the password logs in as."""
    a, b = secure_nodes.start("a"), secure_nodes.start("b")
    alice, alice_events = await clients.make("alice", a.connect)
    bob, bob_events = await clients.make("bob", b.connect)
    await alice.create_room("general", ["bob"])
    await bob_events.until(lambda: bob.cache.room("general") is not None)
    await alice.send("general", "hello over TLS")
    await bob.send("general", "and back")
    for client, events in ((alice, alice_events), (bob, bob_events)):
        await events.until(lambda c=client: len(c.cache.messages("general", limit=10)) == 2)
        texts = [x.text for x in client.cache.messages("general", limit=10)]
        assert texts == ["hello over TLS", "and back"]
    # bob got alice's message live on B: through the watch, as the etcd user
    live = [e for e in bob_events.events if type(e).__name__ == "MessageReceived" and e.live]
    assert any(e.message.sender == "alice" for e in live)
    for node in (a, b):
        assert get(node, "/healthz")[0] == 200
        assert get(node, "/readyz") == (200, {"status": "ready"})
        metrics = scrape(node)
        assert metrics["curvechat_cluster_nodes"] == 2
        assert metrics["curvechat_store_up"] == 1
        assert "node-secret" not in node.log() + "".join(node.stdout)
        # the password is in no process's command line
        assert proc_cmdline(node).count("--etcd-password-file") == 1
        assert "node-secret" not in proc_cmdline(node)
    assert any(line.startswith("cluster: 2 node(s)") for line in b.stdout)


def proc_cmdline(node: ServerProcess) -> str:
    assert node.proc is not None
    return Path(f"/proc/{node.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def serve_refused(
    tmp_path: Path, store: str, *flags: str, env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run `curvechat serve` that must refuse to start: its exit code and
    the lines of its stderr."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "curvechat", "serve",
            "--data", str(tmp_path / f"node-{uuid.uuid4().hex[:8]}"),
            "--bind", f"tcp://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{free_port()}",
            "--store", store, *flags,
        ],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "connect string" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("curvechat: error")]
    assert len(errors) == 1, proc.stderr
    return proc.returncode, errors


def tls_flags(etcd: TlsEtcd, ca: Path | None = None) -> list[str]:
    pki = etcd.pki
    return [
        "--etcd-ca", str(ca or pki.ca),
        "--etcd-cert", str(pki.node_cert), "--etcd-key", str(pki.node_key),
    ]  # fmt: skip


def test_wrong_password_refuses_to_start(tmp_path: Path, secure_etcd: TlsEtcd) -> None:
    url = f"{secure_etcd.url}/tls/x"
    wrong = write_password(tmp_path / "pw", "not-the-password")
    code, (line,) = serve_refused(
        tmp_path, url, *tls_flags(secure_etcd), "--etcd-user", "curvechat",
        "--etcd-password-file", str(wrong),
    )  # fmt: skip
    assert code == 1
    assert line.startswith("curvechat: error [etcd_auth]: cannot use etcd: etcd 127.0.0.1:")
    assert line.endswith("refused user 'curvechat': wrong user name or password")
    assert "not-the-password" not in line
    # the same from the environment variable
    code, (line,) = serve_refused(
        tmp_path, url, *tls_flags(secure_etcd), "--etcd-user", "curvechat",
        env={"CURVECHAT_ETCD_PASSWORD": "also-wrong"},
    )  # fmt: skip
    assert code == 1 and "[etcd_auth]" in line


def test_wrong_ca_refuses_to_start(tmp_path: Path, secure_etcd: TlsEtcd) -> None:
    code, (line,) = serve_refused(
        tmp_path, f"{secure_etcd.url}/tls/x", *tls_flags(secure_etcd, secure_etcd.pki.other_ca)
    )
    assert code == 1
    assert line.startswith("curvechat: error [etcd_tls]: cannot use etcd: etcd 127.0.0.1:")
    assert "its TLS certificate does not verify against" in line and "other-ca.pem" in line


def test_plaintext_url_against_tls_etcd_refuses_to_start(
    tmp_path: Path, secure_etcd: TlsEtcd
) -> None:
    code, (line,) = serve_refused(tmp_path, f"{secure_etcd.plain_url}/tls/x")
    assert code == 1
    assert line.startswith("curvechat: error [store_unavailable]:")
    assert line.endswith("(if etcd serves TLS on that port, use etcds://)")


def test_password_over_plaintext_is_a_usage_error(tmp_path: Path) -> None:
    """Checked before anything starts: no etcd needed."""
    code, (line,) = serve_refused(
        tmp_path, "etcd://127.0.0.1:1/x", "--etcd-user", "curvechat",
        env={"CURVECHAT_ETCD_PASSWORD": "pw"},
    )  # fmt: skip
    assert code == 2
    assert line.startswith("curvechat: error [bad_argument]: etcd authentication needs TLS")
