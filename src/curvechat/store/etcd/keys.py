"""Where the etcd store keeps what: the key layout (docs/operations.md has
the table) and the ``etcd://`` URL.

Names in keys are percent-quoted, so that ``/`` in a room or user name
cannot make one room's range cover another's; sequence numbers are
zero-padded, so that keys sort as numbers.

What it must never do: change a key's shape (every node of a cluster, old
and new, reads the same keys).
"""

from __future__ import annotations

import functools
import re
import urllib.parse

DEFAULT_PREFIX = "/curvechat/"
_SEQ_DIGITS = 20


def parse_etcd_url(url: str) -> tuple[list[str], str]:
    """``etcd://h1:2379,h2:2379[/prefix]`` -> (["h1:2379", "h2:2379"], "/prefix/")
    (the port defaults to 2379, the prefix to DEFAULT_PREFIX); ``etcds://``
    is the same over TLS (see `EtcdSecurity.load`)."""
    scheme = next((s for s in ("etcd://", "etcds://") if url.startswith(s)), "")
    if not scheme:
        raise ValueError(f"not an etcd:// or etcds:// URL: {url!r}")
    hosts, slash, path = url[len(scheme) :].partition("/")
    prefix = f"/{path.strip('/')}/" if slash and path.strip("/") else DEFAULT_PREFIX
    out = []
    for part in hosts.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit() or host.endswith("["):
            host, port = part, "2379"
        if not host:
            raise ValueError(f"no host in {part!r}")
        out.append(f"{host}:{int(port)}")
    if not out:
        raise ValueError(f"no endpoints in {url!r}")
    return out, prefix


# What `quote` never escapes: a name made of these alone is its own quoting
# (most are: user names, room ids but direct messages', transaction ids).
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def q(name: str) -> str:
    """`name` as one part of a key (percent-quoted, "/" included)."""
    return name if _PLAIN.fullmatch(name) else urllib.parse.quote(name, safe="")


def uq(part: str) -> str:
    return urllib.parse.unquote(part)


def tail(key: bytes) -> str:
    """The last part of a key (after its last ``/``)."""
    return key.decode().rsplit("/", 1)[1]


def seq_part(n: int) -> str:
    return f"{n:0{_SEQ_DIGITS}d}"


def prefix_end(key: bytes) -> bytes:
    """The range_end covering every key that starts with `key`."""
    b = bytearray(key)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


class Keys:
    """The keys under one prefix."""

    def __init__(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix

    def _k(self, *parts: str) -> bytes:
        return (self.prefix + "/".join(parts)).encode()

    def k_head(self, room: str) -> bytes:
        return self._k("r", q(room), "head")

    def k_meta(self, room: str) -> bytes:
        return self._k("r", q(room), "meta")

    def k_op(self, room: str, index: int) -> bytes:
        return self._k("r", q(room), "op", seq_part(index))

    def k_member(self, room: str, user: str) -> bytes:
        return self._k("r", q(room), "mem", q(user))

    def k_epoch(self, room: str, epoch: int) -> bytes:
        return self._k("r", q(room), "ep", seq_part(epoch))

    def k_packet(self, room: str, recipient: str, epoch: int) -> bytes:
        return self._k("r", q(room), "pk", q(recipient), seq_part(epoch))

    def k_rooms_of(self, user: str, room: str) -> bytes:
        return self._k("u", q(user), "rooms", q(room))

    def k_user(self, user: str) -> bytes:
        return self._k("u", q(user), "id")

    def k_transport(self, key: bytes) -> bytes:
        return self._k("t", key.hex())

    def k_contacts(self, user: str) -> bytes:
        return self._k("c", q(user))

    def k_msg(self, room: str, seq: int) -> bytes:
        """The key of the message run (runs.py) whose last message is `seq`."""
        return self._k("m", q(room), seq_part(seq))

    def k_msgs(self, room: str) -> bytes:
        """Every message run of `room` starts with this."""
        return self._k("m", q(room), "")

    def k_idem(self, room: str, sender: str, txn: str) -> bytes:
        return self._k("i", q(room), q(sender), q(txn))

    def k_node(self, name: str) -> bytes:
        return self._k("nodes", q(name))

    @functools.cached_property
    def node_prefix(self) -> bytes:
        """The node registry: one key per live chat node, under its lease."""
        return self._k("nodes", "")

    @functools.cached_property
    def message_prefix(self) -> bytes:
        """Every message key starts with this (what cross-node fan-out watches)."""
        return self._k("m", "")

    @functools.cached_property
    def room_prefix(self) -> bytes:
        """Every room state key (head, meta, ops, members, epochs) starts with this."""
        return self._k("r", "")

    def parse_msg_key(self, key: bytes) -> tuple[str, int]:
        room, seq = key[len(self.message_prefix) :].decode().split("/")
        return uq(room), int(seq)

    def parse_room_key(self, key: bytes) -> str:
        return uq(key[len(self.room_prefix) :].decode().split("/")[0])

    def parse_packet_key(self, key: bytes) -> tuple[str, str] | None:
        """(room, recipient) of a `k_packet` key; None for another key of a room."""
        parts = key[len(self.room_prefix) :].decode().split("/")
        if len(parts) != 4 or parts[1] != "pk":
            return None
        return uq(parts[0]), uq(parts[2])
