"""Where the monitor learns which nodes to watch: a fixed list of URLs
(`--node`), or the cluster's registry in etcd (`--store etcd://…`), where
every node puts its name and HTTP URL under a lease
(`curvechat.server.cluster`; the layout is in docs/operations.md).

A node is known by its URL, normalised by `node_url`: its name changes when
it restarts, its URL does not. `EtcdRegistry` reads the registry through
the etcd store's own connection code (TLS, users, error messages) with the
nodes' etcd credentials; it only reads `P nodes/` (opening the store writes
its health key `P health/monitor`). It must never write the registry.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdSecurity, EtcdStore


class SourceUnavailable(Exception):
    """The list of nodes cannot be read now (the message says why)."""


def node_url(text: str) -> str:
    """`http://host:port[/path]` as the monitor keys it (no final slash);
    `host:port` means `http://host:port`. Raises ValueError."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL of a node")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text!r}: give a node's base URL only (no query, fragment or user)")
    try:
        parts.port  # noqa: B018 - checks it
    except ValueError as exc:
        raise ValueError(f"{text!r}: bad port") from exc
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


class NodeSource(Protocol):
    description: str

    async def urls(self) -> list[str]:
        """The nodes' URLs now; raises SourceUnavailable."""
        ...

    async def close(self) -> None: ...


class UrlList:
    """The nodes given on the command line."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = list(dict.fromkeys(node_url(u) for u in urls))
        self.description = "command line"

    async def urls(self) -> list[str]:
        return list(self._urls)

    async def close(self) -> None:
        return None


class RegisteredNode(msgspec.Struct, frozen=True):
    """The fields of a registry entry the monitor reads (the node writes
    more: `curvechat.server.cluster.NodeInfo`)."""

    name: str
    http: str = ""  # the node's HTTP base URL ("" if it serves none)


_registered = msgspec.msgpack.Decoder(RegisteredNode)


class EtcdRegistry:
    """The live nodes of a cluster: the entries under `P nodes/` in etcd."""

    def __init__(self, store_url: str, security: EtcdSecurity | None = None) -> None:
        from curvechat.store.etcd import parse_etcd_url  # gRPC: only when asked for

        self.endpoints, self.prefix = parse_etcd_url(store_url)
        self.security = security
        self.description = "etcd registry"
        self._store: EtcdStore | None = None

    async def urls(self) -> list[str]:
        from curvechat.store import StoreUnavailable
        from curvechat.store.etcd import EtcdStore

        try:
            if self._store is None:
                store = EtcdStore(
                    self.endpoints, prefix=self.prefix, timeout=3.0, security=self.security
                )
                store.origin = "monitor"  # its health key
                await store.open()
                self._store = store
            kvs = await self._store.get_prefix(self._store.node_prefix)
        except StoreUnavailable as exc:
            await self.close()
            raise SourceUnavailable(f"the etcd registry is unreachable: {exc}") from exc
        urls = []
        for kv in kvs:
            with contextlib.suppress(msgspec.DecodeError, ValueError):
                entry = _registered.decode(kv.value)
                if entry.http:
                    urls.append(node_url(entry.http))
        return sorted(set(urls))

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
