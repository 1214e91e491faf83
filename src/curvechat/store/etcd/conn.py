"""How the etcd store reaches etcd: plaintext or TLS (with a client
certificate), and etcd's own authentication (user and password).

What it is for: a production etcd serves its clients over TLS, asks them for
a client certificate signed by its CA, and has authentication on, with each
application confined to its key prefix by a role. `EtcdSecurity` is what the
node was told (``etcds://`` URL, CA, certificate and key, user and password);
`channel` makes one member's gRPC channel from it; `Login` holds the node's
etcd token, and `authed` stubs put it on every call; `failure` turns a gRPC
error into a store error whose message says what to fix.

How it works:

* TLS: gRPC's own TLS (BoringSSL) with the CA given (or the system's roots),
  the client certificate and key if given, and the host name of the URL as
  the name the member's certificate must carry (the channel itself dials the
  address resolved at start).
* Authentication: etcd's ``Authenticate`` call trades the user and password
  for a token that every later call carries as ``token`` metadata. One token
  serves every member (etcd replicates it through Raft). When a member says
  the token is no longer good (it expired, or the member restarted and forgot
  it), the store logs in again once and repeats the call; streams (watch,
  lease keep-alive) carry the token current when they open.
* Without a user, a client certificate alone identifies the node: etcd with
  ``--client-cert-auth`` takes the certificate's common name as the user.

What it must never do: send the password or the token over plaintext (a user
without TLS is refused), put the password into a message, a log line or a
``repr``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import StoreRefused, StoreUnavailable

__all__ = ["PASSWORD_ENV", "EtcdSecurity", "Login", "authed", "channel", "failure"]

PASSWORD_ENV = "CURVECHAT_ETCD_PASSWORD"


@dataclass(frozen=True)
class EtcdSecurity:
    """How to reach etcd: `tls` on or off; the CA (PEM; None means the system's
    roots), the client certificate chain and key (PEM), and the etcd user and
    password. The `*_file` fields only name the files, for messages."""

    tls: bool = False
    ca: bytes | None = field(default=None, repr=False)
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    user: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""

    @classmethod
    def load(
        cls,
        url: str,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        user: str | None = None,
        password_file: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> EtcdSecurity:
        """The security of a ``--store`` URL and its flags, files read now.
        The password comes from `password_file`, else from $CURVECHAT_ETCD_PASSWORD
        (never from the command line, where `ps` would show it).
        Raises ValueError, with a message that names the flag to fix."""
        tls = url.startswith("etcds://")
        if not tls and (ca_file or cert_file or key_file):
            raise ValueError("--etcd-ca, --etcd-cert and --etcd-key need an etcds:// URL")
        if bool(cert_file) != bool(key_file):
            raise ValueError("--etcd-cert and --etcd-key go together")
        password = ""
        if password_file:
            text = _read(password_file, "--etcd-password-file").decode()
            password = text.splitlines()[0] if text else ""  # its first line
        elif environ.get(PASSWORD_ENV):
            password = environ[PASSWORD_ENV]
        if user and not password:
            raise ValueError(
                f"--etcd-user needs a password: --etcd-password-file FILE or ${PASSWORD_ENV}"
            )
        if password and not user:
            raise ValueError(
                f"an etcd password (--etcd-password-file or ${PASSWORD_ENV}) needs --etcd-user"
            )
        if user and not tls:
            raise ValueError(
                "etcd authentication needs TLS: over etcd:// the password and the token"
                " would cross the network in clear (use etcds://)"
            )
        return cls(
            tls=tls,
            ca=_read_pem(ca_file, "--etcd-ca") if ca_file else None,
            cert=_read_pem(cert_file, "--etcd-cert") if cert_file else None,
            key=_read_pem(key_file, "--etcd-key") if key_file else None,
            user=user or "",
            password=password,
            ca_file=ca_file or "",
            cert_file=cert_file or "",
        )

    @property
    def who(self) -> str:
        """The etcd identity the node uses, in words."""
        if self.user:
            return f"user {self.user!r}"
        if self.cert is not None:
            return f"the user named by the common name of {self.cert_file}"
        return "no user"


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from exc


def _read_pem(path: str, flag: str) -> bytes:
    data = _read(path, flag)
    if b"-----BEGIN " not in data:
        raise ValueError(f"{flag}: {path} is not a PEM file")
    return data


def channel(endpoint: str, target: str, security: EtcdSecurity | None, options: list[Any]) -> Any:
    """One member's gRPC channel to `target` (an address); with TLS the
    member's certificate must be valid for the host name in `endpoint`."""
    if security is None or not security.tls:
        return rpc.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(
        root_certificates=security.ca,
        private_key=security.key,
        certificate_chain=security.cert,
    )
    host = endpoint.rpartition(":")[0].strip("[]")
    return rpc.secure_channel(target, creds, options=[*options, ("grpc.default_authority", host)])


# etcd's answers when its token is no longer good: log in again, repeat once
_STALE_TOKEN = ("invalid auth token", "revision of auth store is old")


class Login:
    """The node's etcd login: the token every call carries (one for every
    member), fetched with the user and password at the first call and again
    when a member rejects it."""

    def __init__(self, security: EtcdSecurity) -> None:
        self.security = security
        self.token = ""
        self.logins = 0  # how many times it logged in (for tests)
        self._lock = asyncio.Lock()

    def metadata(self, extra: Any = None) -> tuple[tuple[str, str], ...]:
        return (*tuple(extra or ()), ("token", self.token))

    async def renew(self, member_channel: Any, stale: str, timeout: float) -> str:
        """A fresh token through `member_channel`, unless the token is no
        longer `stale` (another call renewed it meanwhile)."""
        async with self._lock:
            if self.token == stale:
                resp = await rpc.AuthStub(member_channel).Authenticate(
                    rpc.AuthenticateRequest(
                        name=self.security.user, password=self.security.password
                    ),
                    timeout=timeout,
                )
                self.token = str(resp.token)
                self.logins += 1
            return self.token


class AuthedStub:
    """A stub whose every call carries the login's current token: the store's
    own calls and those the cluster layer makes on the store's stubs (the
    registry's lease, the watch). A unary call logs in first if there is no
    token yet, and once more, then repeats, if the member rejects the token;
    a stream opens with the token current then."""

    def __init__(self, stub: Any, login: Login, member_channel: Any) -> None:
        self._stub = stub
        self._login = login
        self._channel = member_channel

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        login, member_channel = self._login, self._channel

        if not isinstance(method, grpc.aio.UnaryUnaryMultiCallable):

            def stream(*args: Any, metadata: Any = None, **kw: Any) -> Any:
                return method(*args, metadata=login.metadata(metadata), **kw)

            return stream

        async def unary(request: Any, *, timeout: float = 5.0, metadata: Any = None) -> Any:
            token = login.token or await login.renew(member_channel, "", timeout)
            try:
                return await method(request, timeout=timeout, metadata=login.metadata(metadata))
            except rpc.AioRpcError as exc:
                if not any(s in str(exc.details()) for s in _STALE_TOKEN):
                    raise
            await login.renew(member_channel, token, timeout)
            return await method(request, timeout=timeout, metadata=login.metadata(metadata))

        return unary


def authed(stub: Any, login: Login | None, member_channel: Any) -> Any:
    """`stub` itself without a login, else an `AuthedStub` over it."""
    return stub if login is None else AuthedStub(stub, login, member_channel)


def failure(
    endpoint: str,
    exc: Any,
    security: EtcdSecurity | None,
    prefix: str,
    *,
    opening: bool = False,
) -> StoreUnavailable:
    """The store error for a gRPC error `exc` of a call to `endpoint`:
    `StoreRefused` (with a code) when etcd refused the node's TLS set-up or
    credentials, with a message that says what to fix. `opening`: no call
    has worked yet (a closed connection then hints at TLS)."""
    code, details = exc.code().name, str(exc.details())
    sec = security or EtcdSecurity()
    where = f"etcd {endpoint}"
    if "authentication failed" in details:
        return StoreRefused("etcd_auth", f"{where} refused {sec.who}: wrong user name or password")
    if "user name is empty" in details:
        return StoreRefused(
            "etcd_auth",
            f"{where} has authentication on and this node gave no user: give --etcd-user"
            " and a password, or an --etcd-cert whose common name is an etcd user",
        )
    if "authentication is not enabled" in details:
        return StoreRefused(
            "etcd_auth",
            f"{where} has authentication off, but --etcd-user was given:"
            " turn authentication on in etcd (or leave out --etcd-user)",
        )
    if code == "PERMISSION_DENIED":
        return StoreRefused(
            "etcd_permission",
            f"{where}: {sec.who} may not read and write the keys under {prefix}"
            " (grant its role readwrite on that prefix)",
        )
    if "CERTIFICATE_VERIFY_FAILED" in details:
        ca = sec.ca_file or "the system's CA certificates"
        reason = details.split("CERTIFICATE_VERIFY_FAILED:", 1)[1].split(":")[0].strip()
        return StoreRefused(
            "etcd_tls",
            f"{where}: its TLS certificate does not verify against {ca} ({reason}):"
            " check --etcd-ca",
        )
    if "Hostname Verification" in details:
        host = endpoint.rpartition(":")[0]
        return StoreRefused(
            "etcd_tls", f"{where}: its TLS certificate is not valid for the name {host}"
        )
    if "WRONG_VERSION_NUMBER" in details or "packet length too long" in details:
        return StoreRefused(
            "etcd_tls", f"{where} does not answer TLS: does it serve plaintext (etcd://)?"
        )
    if sec.tls and ("TSI_DATA_CORRUPTED" in details or "BAD_CERTIFICATE" in details):
        given = f"the certificate in {sec.cert_file}" if sec.cert_file else "no certificate"
        return StoreRefused(
            "etcd_tls",
            f"{where} refused this node's TLS client certificate ({given}):"
            " etcd asks for one signed by its CA (--etcd-cert, --etcd-key)",
        )
    # At once a closed (or reset) connection: TLS on one side only, most
    # likely, which no retry mends (not one etcd down or electing a leader).
    hint = ""
    if opening and sec.tls and "Handshake read failed" in details:
        hint = " (does it serve plaintext (etcd://)?)"
    elif opening and not sec.tls and ("Socket closed" in details or "reset by peer" in details):
        hint = " (if etcd serves TLS on that port, use etcds://)"
    if hint:
        return StoreRefused("store_unavailable", f"{where}: {code}: {details}{hint}")
    return StoreUnavailable(f"{where}: {code}: {details}")
