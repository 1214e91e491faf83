"""Connect strings: where a server listens and which CURVE key proves it.

One node::

    curvechat://127.0.0.1:7700/<52-character base32 public key>

Several nodes: the same joined with commas. The key's alphabet (``a-z``,
``2-7``) and the rest of the string need no quoting in a shell, a URL or a
chat message. A 64-character hex key is accepted in its place, and so is
the older form, ``tcp://HOST:PORT/<40-character z85 key>`` (z85 has ``$ & <
> # ( ) { } [ ] ! * ?`` and ``/`` in its alphabet: its key is always the
last 40 characters of an item). Both forms may be mixed in one string.

In memory a `ServerAddress` keeps the ZeroMQ endpoint (``tcp://…``) and the
key in z85, which is what the transport takes; `str` gives the new form.
`server_fingerprint` is the short number a person reads out to check a key
that reached them through a channel they do not trust (hashlib only: this
package does not load PyNaCl).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from curvechat.protocol.errors import CurvechatError

SCHEME: Final = "curvechat://"
KEY_BYTES: Final = 32
Z85_KEY_LEN: Final = 40
BASE32_KEY_LEN: Final = 52
HEX_KEY_LEN: Final = 64
MAX_CONNECT_LEN: Final = 4096

Z85_ALPHABET: Final = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_INDEX: Final = {c: i for i, c in enumerate(Z85_ALPHABET)}
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# A host name of dot-separated labels (an IPv4 address is one), or a
# bracketed IPv6 address; ASCII digits only (`\d` would take any script's).
_HOST_PORT_RE: Final = re.compile(
    rf"(\[[0-9a-fA-F:.]+\]|{_LABEL}(?:\.{_LABEL})*):([0-9]{{1,5}})", re.ASCII
)
_BASE32_RE: Final = re.compile(r"[a-z2-7]{52}|[A-Z2-7]{52}")
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]{64}")

_PERSON_SERVER: Final = b"curvechat-srv-v1"  # blake2b personalisation
_FINGERPRINT_GROUPS: Final = 6  # of 5 digits: about 100 bits


class ConnectStringError(CurvechatError, ValueError):
    """The connect string is malformed; the message says which part."""

    code = "bad_connect_string"


def z85_encode(data: bytes) -> str:
    """Z85 (ZeroMQ RFC 32) of `data`, whose length must be a multiple of 4."""
    if len(data) % 4:
        raise ValueError("z85 encodes a multiple of 4 bytes")
    out: list[str] = []
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i : i + 4], "big")
        chunk = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            chunk.append(Z85_ALPHABET[digit])
        out.extend(reversed(chunk))
    return "".join(out)


def z85_decode(text: str) -> bytes:
    """The bytes of a z85 string; ValueError for a bad character, a length
    that is not a multiple of 5, or a group above 2**32 - 1."""
    if len(text) % 5:
        raise ValueError("z85 text is a multiple of 5 characters")
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for ch in text[i : i + 5]:
            digit = _Z85_INDEX.get(ch)
            if digit is None:
                raise ValueError(f"{ch!r} is not a z85 character")
            value = value * 85 + digit
        if value >= 1 << 32:
            raise ValueError("z85 group out of range")
        out += value.to_bytes(4, "big")
    return bytes(out)


def base32_key(key: bytes) -> str:
    """A 32-byte key as 52 lowercase base32 characters (RFC 4648, no padding)."""
    return base64.b32encode(key).decode().rstrip("=").lower()


def server_fingerprint(key: bytes) -> str:
    """What two people read out to each other to check a server key: 30
    digits in 6 groups of 5, from a personalised BLAKE2b of the key."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a server key is {KEY_BYTES} bytes")
    digest = hashlib.blake2b(key, digest_size=32, person=_PERSON_SERVER).digest()
    # 5 bytes (40 bits) per group: reducing mod 10^5 is biased by < 10^-7.
    return " ".join(
        f"{int.from_bytes(digest[5 * i : 5 * i + 5], 'big') % 100_000:05d}"
        for i in range(_FINGERPRINT_GROUPS)
    )


@dataclass(frozen=True, slots=True)
class ServerAddress:
    endpoint: str
    """A ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:7700``."""
    server_key: str
    """The server's CURVE public key, z85 (40 characters)."""

    @property
    def key(self) -> bytes:
        return z85_decode(self.server_key)

    @property
    def fingerprint(self) -> str:
        return server_fingerprint(self.key)

    @property
    def legacy(self) -> str:
        """The older form: ``tcp://HOST:PORT/<z85 key>``."""
        return f"{self.endpoint}/{self.server_key}"

    def __str__(self) -> str:
        host_port = self.endpoint.removeprefix("tcp://")
        return f"{SCHEME}{host_port}/{base32_key(self.key)}"


def _key_of(n: int, text: str) -> bytes:
    if _BASE32_RE.fullmatch(text):
        key = base64.b32decode(text.upper() + "====")
        # the last character carries 4 unused bits, which must be zero:
        # each key has one spelling, so repeats are recognised
        if base32_key(key) == text.lower():
            return key
    elif _HEX_RE.fullmatch(text):
        return binascii.unhexlify(text)
    raise ConnectStringError(
        f"item {n}: the server key is neither {BASE32_KEY_LEN} base32 characters "
        f"(a-z, 2-7) nor {HEX_KEY_LEN} hex digits (the older form, tcp://HOST:PORT/"
        "followed by the key's 40 z85 characters, is taken too)"
    )


def _endpoint_of(n: int, host_port: str, shown: str) -> str:
    m = _HOST_PORT_RE.fullmatch(host_port)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ConnectStringError(f"item {n}: {shown!r} is not HOST:PORT")
    return f"tcp://{host_port}"


def dialable(endpoint: str) -> bool:
    """Whether a connect string can carry `endpoint`: ``tcp://HOST:PORT``
    with a port 1-65535 (what `serve --advertise` must give)."""
    m = _HOST_PORT_RE.fullmatch(endpoint.removeprefix("tcp://"))
    return endpoint.startswith("tcp://") and m is not None and 0 < int(m.group(2)) < 65536


def _parse_item(n: int, item: str) -> ServerAddress:
    if item.startswith(SCHEME):
        host_port, slash, key = item[len(SCHEME) :].rpartition("/")
        if not slash:
            raise ConnectStringError(
                f"item {n} ({item[:60]!r}): expected {SCHEME}HOST:PORT/<server key>"
            )
        endpoint = _endpoint_of(n, host_port, host_port)
        return ServerAddress(endpoint, z85_encode(_key_of(n, key)))
    if not item.startswith("tcp://"):
        raise ConnectStringError(
            f"item {n} ({item[:60]!r}): expected {SCHEME}HOST:PORT/<server key>"
        )
    # The older form. z85 may contain '/', so the key is the last 40 characters.
    if len(item) < Z85_KEY_LEN + 2 or item[-Z85_KEY_LEN - 1] != "/":
        raise ConnectStringError(
            f"item {n} ({item[:60]!r}): expected tcp://HOST:PORT/<40-character z85 key>"
        )
    endpoint, key = item[: -Z85_KEY_LEN - 1], item[-Z85_KEY_LEN:]
    _endpoint_of(n, endpoint.removeprefix("tcp://"), endpoint)
    try:
        z85_decode(key)
    except ValueError:
        raise ConnectStringError(f"item {n}: the server key is not 40 z85 characters") from None
    return ServerAddress(endpoint, key)


def spread_score(user: str, node_key: bytes) -> int:
    """The rendezvous score of the node with CURVE public key `node_key` for
    `user` (protocol.md, "Which node"): clients rank nodes by it, highest
    first, and nodes find by it which node a client would pick."""
    h = hashlib.blake2b(digest_size=8, person=b"curvechat-spread")
    h.update(user.encode())
    h.update(b"\x00")
    h.update(node_key)
    return int.from_bytes(h.digest(), "big")


def parse_connect(text: str) -> list[ServerAddress]:
    """Parse a connect string into one address per node (order kept, no repeats)."""
    text = text.strip()
    if not text:
        raise ConnectStringError("empty connect string")
    if len(text) > MAX_CONNECT_LEN:
        raise ConnectStringError(f"connect string longer than {MAX_CONNECT_LEN} characters")
    out: list[ServerAddress] = []
    for n, item in enumerate(text.split(","), 1):
        addr = _parse_item(n, item.strip())
        if addr not in out:
            out.append(addr)
    return out


def format_connect(addresses: list[ServerAddress], *, legacy: bool = False) -> str:
    """The connect string naming `addresses`: the new form, or with `legacy`
    the older ``tcp://…/<z85>`` form (what the cluster registry and a
    welcome's peers carry, so clients from before the new form read them)."""
    return ",".join(a.legacy if legacy else str(a) for a in addresses)
