"""Who may talk to the node's HTTP side, and what every answer carries.

* **Host check** (against DNS rebinding): a request is served only if its
  `Host` names this node: the address it is bound to, `localhost` and the
  loopback addresses when that includes loopback, any IP address when it is
  bound to a wildcard, the host of the URL it registers for the cluster, and
  the names given with `--http-host`. Anything else gets 421.
* **Bearer token**: `http.token` in the data dir (or `--http-token-file`),
  32 random bytes, mode 0600, made on first start and reused. `/api/*` (and
  `/metrics` unless `--metrics-open`) need `Authorization: Bearer <token>`
  when the HTTP side is bound to anything but loopback, or always with
  `--http-require-token`. `/healthz` and `/readyz` stay open; `/` and
  `/static/…` are the page's code, which holds no data, and stay open so the
  page can ask for the token.
* **Security headers** on every answer: a CSP that allows only the node's
  own script, style and fetches and no framing, `X-Frame-Options: DENY`,
  `nosniff`, `Referrer-Policy: no-referrer`. No answer carries any
  `Access-Control-Allow-*` header: other origins cannot read it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from curvechat.protocol.errors import BindFailed, ConfigError
from curvechat.server.httpload import cap_connections

log = logging.getLogger("curvechat.http")

TOKEN_FILE = "http.token"
TOKEN_RE = re.compile(r"[A-Za-z0-9_\-.~+/=]{16,512}")
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})  # the page itself: code, no data
MAX_LOGGED_HOSTS = 64

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpTokenError(ConfigError):
    """The token file cannot be used (bad mode or contents, or it cannot be
    read or made)."""

    code = "http_token"


def load_or_create_token(path: Path) -> str:
    """The node's HTTP bearer token: read from `path`, or made there (mode
    0600 from the first byte) on first start."""
    try:
        return _read_token(path) if path.exists() else _create_token(path)
    except OSError as exc:
        raise HttpTokenError(f"cannot use the token file {path}: {exc}") from exc


def _read_token(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise HttpTokenError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    token = path.read_text(errors="replace").strip()
    if not TOKEN_RE.fullmatch(token):
        raise HttpTokenError(
            f"{path} does not hold a token (16-512 characters of A-Z a-z 0-9 _-.~+/=);"
            " delete it to have a new one made"
        )
    return token


def _create_token(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


async def listen(runner: web.AppRunner, host: str, port: int) -> int:
    """Serve `runner` (set up, with `httpload.IDLE_S` as its keep-alive
    timeout) on host:port, at most `httpload.MAX_CONNECTIONS` connections at
    once; returns the port bound (the real one when asked for port 0). An
    address that cannot be taken (in use, not this host's, a name that does
    not resolve) is BindFailed, naming it; the caller cleans the runner up."""
    assert runner.server is not None, "set the runner up first"
    cap_connections(runner.server)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        why = exc.strerror or str(exc)
        raise BindFailed(f"cannot listen on http://{shown}:{port}: {why}") from exc
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether binding to `host` serves loopback only ("" means 127.0.0.1)."""
    if host in ("", "localhost"):
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def is_wildcard(host: str) -> bool:
    ip = _ip(host)
    return host == "*" or (ip is not None and ip.is_unspecified)


def normalise_host(name: str) -> str:
    """A host name or address as compared: lower case, no brackets, no final dot."""
    name = name.strip().lower().rstrip(".")
    ip = _ip(name)
    return str(ip) if ip is not None else name


def host_of(header: str) -> str:
    """The host part of a `Host` header value: `name`, `name:port`, `[v6]:port`."""
    header = header.strip()
    if header.startswith("["):
        return normalise_host(header[1 : header.find("]")] if "]" in header else header)
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return normalise_host(header)


@dataclass
class HttpGuard:
    """The HTTP side's policy; `install` puts it on an aiohttp app."""

    token: str
    require_token: bool
    hosts: frozenset[str]  # normalised names and addresses allowed in Host
    any_ip: bool = False  # bound to a wildcard: any IP address is this node
    metrics_open: bool = False
    serves: str = "node"
    """What it guards, as its refusals name it ("node", "monitor")."""
    _refused: set[str] = field(default_factory=set)

    @classmethod
    def for_bind(
        cls,
        bind_host: str,
        token: str,
        *,
        extra_hosts: Iterable[str] = (),
        require_token: bool = False,
        metrics_open: bool = False,
        serves: str = "node",
    ) -> HttpGuard:
        """The policy of a node whose HTTP side is bound to `bind_host`:
        loopback binds need the token only if `require_token`."""
        hosts = {host_of(h) for h in extra_hosts if h.strip()}
        wildcard = is_wildcard(bind_host)
        if wildcard or is_loopback(bind_host):
            hosts |= {"localhost", "127.0.0.1", "::1"}
        if not wildcard and bind_host not in ("", "localhost"):
            hosts.add(normalise_host(bind_host))
        return cls(
            token=token,
            require_token=require_token or not is_loopback(bind_host),
            hosts=frozenset(hosts),
            any_ip=wildcard,
            metrics_open=metrics_open,
            serves=serves,
        )

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        host = host_of(header)
        if host in self.hosts:
            return True
        return self.any_ip and _ip(host) is not None

    def needs_token(self, path: str) -> bool:
        if not self.require_token or path in OPEN_PATHS or path in PUBLIC_PATHS:
            return False
        if path.startswith("/static/"):
            return False
        return not (path == "/metrics" and self.metrics_open)

    def authorised(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            given = value.strip().encode("ascii")
        except UnicodeEncodeError:  # aiohttp hands raw bytes over as surrogates
            return False
        return hmac.compare_digest(given, self.token.encode())

    async def check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware: Host first (421), then the token (401)."""
        header = request.headers.get("Host")
        if not self.host_allowed(header):
            return self._misdirected(header or "")
        if self.needs_token(request.path) and not self.authorised(
            request.headers.get("Authorization")
        ):
            return web.json_response(
                {
                    "error": "unauthorized",
                    "detail": "this node's HTTP side needs its token: send"
                    " 'Authorization: Bearer <token>' (the token is in the node's"
                    " http.token file; `curvechat serve` prints the dashboard URL with it)",
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="curvechat"'},
            )
        return await handler(request)

    def _misdirected(self, header: str) -> web.Response:
        shown = ascii(host_of(header)[:100]) if header else "(none given)"
        if len(self._refused) < MAX_LOGGED_HOSTS and shown not in self._refused:
            self._refused.add(shown)  # logged once per name, for the first few names
            log.warning(
                "HTTP: refused a request for host %s (not a name of this node;"
                " add it with --http-host if it is one)",
                shown,
            )
        return web.Response(
            status=421,
            text=f"421 Misdirected Request: this {self.serves} does not answer to the host"
            f" name {shown} (a DNS rebinding attempt, or a name it was not told about: if it"
            f" is one of its names, start the {self.serves} with --http-host NAME).\n",
        )

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        for name in [h for h in response.headers if h.lower().startswith("access-control-")]:
            del response.headers[name]

    def install(self, app: web.Application) -> None:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.check(request, handler)

        app.middlewares.append(guard)
        app.on_response_prepare.append(self.on_prepare)
