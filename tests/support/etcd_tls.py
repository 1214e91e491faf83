"""A real etcd with TLS, client certificates and authentication, for the
tests of `--store etcds://…`: a throw-away certificate authority made with the
openssl command line (no Python dependency), a single etcd member serving
gRPC only over TLS and asking every client for a certificate signed by that
CA, and etcd users and roles set up through its JSON gateway before
authentication is switched on.

Users (passwords in `PASSWORDS`): ``root`` (needed to enable auth),
``curvechat`` (read-write on keys under `ALLOWED_PREFIX` only), and the same
``curvechat`` identity by certificate: a client certificate whose common name
is ``curvechat`` logs in as that user without a password."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support.etcd import EtcdCluster, EtcdMember

OPENSSL = shutil.which("openssl") or "openssl"
ALLOWED_PREFIX = "/tls/"  # the curvechat role may read and write only under it
PASSWORDS = {"root": "root-secret-0", "curvechat": "node-secret-1"}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


class Pki:
    """A CA and certificates signed by it (P-256 keys, valid for a day), plus
    a second, unrelated CA (`other_ca`) for the wrong-CA test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self._self_signed("ca")
        self.other_ca, _ = self._self_signed("other-ca")
        self.server_cert, self.server_key = self.issue(
            "etcd-server", san="DNS:localhost,IP:127.0.0.1", server=True
        )
        # a node's client certificate; its common name is the etcd user it logs in as
        self.node_cert, self.node_key = self.issue("curvechat")
        # a certificate for a common name that is no etcd user
        self.stranger_cert, self.stranger_key = self.issue("stranger")
        self.root_cert, self.root_key = self.issue("root")

    def _self_signed(self, name: str) -> tuple[Path, Path]:
        cert, key = self.root / f"{name}.pem", self.root / f"{name}-key.pem"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", f"/CN=curvechat test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", key.name, "-out", cert.name,
            cwd=self.root,
        )  # fmt: skip
        return cert, key

    def issue(self, cn: str, *, san: str = "", server: bool = False) -> tuple[Path, Path]:
        cert, key, csr = (self.root / f"{cn}{s}" for s in (".pem", "-key.pem", ".csr"))
        ext = self.root / f"{cn}.ext"
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={cn}", "-keyout", key.name, "-out", csr.name,
            cwd=self.root,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr.name, "-CA", self.ca.name, "-CAkey", self.ca_key.name,
            "-CAcreateserial", "-days", "1", "-extfile", ext.name, "-out", cert.name,
            cwd=self.root,
        )  # fmt: skip
        key.chmod(0o600)
        return cert, key

    def server_args(self) -> tuple[str, ...]:
        return (
            "--cert-file", str(self.server_cert), "--key-file", str(self.server_key),
            "--trusted-ca-file", str(self.ca), "--client-cert-auth",
        )  # fmt: skip

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.root_cert), str(self.root_key))
        return ctx


class TlsMember(EtcdMember):
    """An etcd member whose client URL is https (peers stay on loopback http:
    a single member has none)."""

    def __init__(self, name: str, data: Path, pki: Pki, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(name, data, (*pki.server_args(), *extra_args))
        self.pki = pki

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                self.client_url + "/health", timeout=1, context=self.pki.client_context()
            ) as resp:
                return b'"health":"true"' in resp.read()
        except (urllib.error.URLError, OSError):
            return False

    def post(self, path: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
        """A call to etcd's JSON gateway (v3 API) over TLS."""
        req = urllib.request.Request(
            self.client_url + path, data=json.dumps(body).encode(), method="POST"
        )
        if token:
            req.add_header("Authorization", token)
        with urllib.request.urlopen(req, timeout=10, context=self.pki.client_context()) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result


class TlsEtcd(EtcdCluster):
    """One etcd member with TLS, client certificates and (after `start`)
    authentication on."""

    def __init__(self, root: Path, pki: Pki, extra_args: tuple[str, ...] = ()) -> None:
        self.pki = pki
        self.members = [TlsMember("m0", root / "m0", pki, extra_args)]

    @property
    def member(self) -> TlsMember:
        member = self.members[0]
        assert isinstance(member, TlsMember)
        return member

    @property
    def url(self) -> str:
        return "etcds://" + self.endpoints

    @property
    def plain_url(self) -> str:
        return "etcd://" + self.endpoints

    def start(self, timeout: float = 30.0) -> TlsEtcd:
        super().start(timeout)
        self.enable_auth()
        return self

    def enable_auth(self) -> None:
        m = self.member
        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        for user in ("root", "curvechat"):
            m.post("/v3/auth/user/add", {"name": user, "password": PASSWORDS[user]})
        m.post("/v3/auth/role/add", {"name": "root"})
        m.post("/v3/auth/user/grant", {"user": "root", "role": "root"})
        m.post("/v3/auth/role/add", {"name": "curvechat"})
        end = ALLOWED_PREFIX[:-1] + chr(ord(ALLOWED_PREFIX[-1]) + 1)  # "/tls0"
        perm = {"permType": "READWRITE", "key": b64(ALLOWED_PREFIX), "range_end": b64(end)}
        m.post("/v3/auth/role/grant", {"name": "curvechat", "perm": perm})
        m.post("/v3/auth/user/grant", {"user": "curvechat", "role": "curvechat"})
        m.post("/v3/auth/enable", {})


@contextlib.contextmanager
def tls_etcd(root: Path, extra_args: tuple[str, ...] = ()) -> Iterator[TlsEtcd]:
    """A fresh single-member etcd with TLS, client certificates and auth;
    `extra_args` go to etcd."""
    etcd = TlsEtcd(root / "etcd", Pki(root / "pki"), extra_args)
    try:
        yield etcd.start()
    finally:
        etcd.stop()
