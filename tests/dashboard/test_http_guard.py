"""The HTTP side's policy on its own: which Host names a node answers to for
each bind address, which paths need the token, how the token is checked,
and the token file (made 0600, reused, refused when others can read it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curvechat.server.httpguard import HttpGuard, HttpTokenError, host_of, load_or_create_token

TOKEN = "t" * 43


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("example.org", "example.org"),
        ("Example.ORG.:7780", "example.org"),
        ("127.0.0.1:7780", "127.0.0.1"),
        ("[::1]:7780", "::1"),
        ("[0:0::1]", "::1"),
        ("::1", "::1"),
        ("localhost", "localhost"),
    ],
)
def test_host_of(header: str, host: str) -> None:
    assert host_of(header) == host


def test_loopback_bind() -> None:
    guard = HttpGuard.for_bind("127.0.0.1", TOKEN, extra_hosts=["chat.example:443"])
    assert not guard.require_token
    for ok in ("127.0.0.1:7780", "localhost:7780", "[::1]:7780", "chat.example", "CHAT.example."):
        assert guard.host_allowed(ok), ok
    for bad in (None, "", "evil.example", "127.0.0.1.evil.example", "10.0.0.1", "sub.localhost"):
        assert not guard.host_allowed(bad), bad
    assert HttpGuard.for_bind("127.0.0.1", TOKEN, require_token=True).require_token
    assert not HttpGuard.for_bind("::1", TOKEN).require_token


def test_address_bind() -> None:
    guard = HttpGuard.for_bind("10.0.0.5", TOKEN)
    assert guard.require_token
    assert guard.host_allowed("10.0.0.5:7780")
    for bad in ("localhost", "127.0.0.1", "10.0.0.6", "evil.example"):
        assert not guard.host_allowed(bad), bad


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "*"])
def test_wildcard_bind(bind: str) -> None:
    guard = HttpGuard.for_bind(bind, TOKEN, extra_hosts=["node1.example"])
    assert guard.require_token
    for ok in ("10.0.0.5", "192.0.2.7:7780", "[2001:db8::1]:7780", "localhost", "node1.example"):
        assert guard.host_allowed(ok), ok
    assert not guard.host_allowed("evil.example")


def test_which_paths_need_the_token() -> None:
    guard = HttpGuard.for_bind("0.0.0.0", TOKEN)
    for path in ("/api/state", "/api/nodes", "/api/peers/x/state", "/metrics", "/other"):
        assert guard.needs_token(path), path
    for path in ("/healthz", "/readyz", "/", "/static/dashboard.js"):
        assert not guard.needs_token(path), path
    opened = HttpGuard.for_bind("0.0.0.0", TOKEN, metrics_open=True)
    assert not opened.needs_token("/metrics") and opened.needs_token("/api/state")
    loopback = HttpGuard.for_bind("127.0.0.1", TOKEN)
    assert not loopback.needs_token("/api/state")


def test_bearer_check() -> None:
    guard = HttpGuard.for_bind("0.0.0.0", TOKEN)
    assert guard.authorised(f"Bearer {TOKEN}")
    assert guard.authorised(f"bearer  {TOKEN}")
    for bad in (None, "", "Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", f"{TOKEN}"):
        assert not guard.authorised(bad), bad
    # aiohttp hands a header's raw bytes over as surrogates: refused, not raised on
    assert not guard.authorised("Bearer \udcff")
    assert not guard.authorised(f"Bearer {TOKEN[:-1]}\u00e9")


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "http.token"
    token = load_or_create_token(path)
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(path) == token  # reused
    assert not (tmp_path / "data" / "http.token.tmp").exists()
    os.chmod(path, 0o640)
    with pytest.raises(HttpTokenError, match=r"readable by others \(mode 640\); chmod 600 it"):
        load_or_create_token(path)
    os.chmod(path, 0o600)
    path.write_text("short\n")
    with pytest.raises(HttpTokenError, match="does not hold a token"):
        load_or_create_token(path)
    path.write_text("a token with spaces in it\n")
    with pytest.raises(HttpTokenError, match="does not hold a token"):
        load_or_create_token(path)
