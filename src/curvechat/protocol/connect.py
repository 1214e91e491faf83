"""Connect strings: where a server listens and which CURVE key proves it.

One node: ``tcp://127.0.0.1:7700/<40-character z85 public key>``. Several
nodes: the same joined with commas. Z85 may itself contain ``/``, so the key
is always the last 40 characters of an item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curvechat.protocol.errors import CurvechatError

Z85_KEY_LEN = 40
_Z85_CHARS = re.escape(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_KEY_RE = re.compile(f"[{_Z85_CHARS}]{{{Z85_KEY_LEN}}}")
_ENDPOINT_RE = re.compile(r"tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
MAX_CONNECT_LEN = 4096


class ConnectStringError(CurvechatError, ValueError):
    """The connect string is malformed; the message says which part."""

    code = "bad_connect_string"


@dataclass(frozen=True, slots=True)
class ServerAddress:
    endpoint: str
    """A ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:7700``."""
    server_key: str
    """The server's CURVE public key, z85 (40 characters)."""

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.server_key}"


def parse_connect(text: str) -> list[ServerAddress]:
    """Parse a connect string into one address per node (order kept, no repeats)."""
    text = text.strip()
    if not text:
        raise ConnectStringError("empty connect string")
    if len(text) > MAX_CONNECT_LEN:
        raise ConnectStringError(f"connect string longer than {MAX_CONNECT_LEN} characters")
    out: list[ServerAddress] = []
    for n, item in enumerate(text.split(","), 1):
        item = item.strip()
        if len(item) < Z85_KEY_LEN + 2 or item[-Z85_KEY_LEN - 1] != "/":
            raise ConnectStringError(
                f"item {n} ({item[:60]!r}): expected tcp://HOST:PORT/<40-character server key>"
            )
        endpoint, key = item[: -Z85_KEY_LEN - 1], item[-Z85_KEY_LEN:]
        m = _ENDPOINT_RE.fullmatch(endpoint)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise ConnectStringError(f"item {n}: {endpoint!r} is not tcp://HOST:PORT")
        if _KEY_RE.fullmatch(key) is None:
            raise ConnectStringError(f"item {n}: the server key is not 40 z85 characters")
        addr = ServerAddress(endpoint, key)
        if addr not in out:
            out.append(addr)
    return out


def format_connect(addresses: list[ServerAddress]) -> str:
    return ",".join(str(a) for a in addresses)
