"""`open_client`: the one way a front end (CLI, TUI, scripts) opens the
engine on a user's home: the local cache and a `ChatClient` that owns it,
ranking first the live nodes its last connection was told of, or with a
single node the node that answered last (`recall`)."""

from __future__ import annotations

from typing import Any

from curvechat.client.cache import Cache, CacheError, cache_key
from curvechat.client.connection import Connection
from curvechat.client.engine import ChatClient
from curvechat.client.errors import SetupFailed
from curvechat.client.home import Home
from curvechat.client.parts import EventHandler
from curvechat.client.recall import Recall, remembered_live, remembered_node
from curvechat.client.servers import prefer
from curvechat.crypto.identity import Identity
from curvechat.protocol.connect import ServerAddress


def open_client(
    home: Home,
    identity: Identity,
    addresses: list[ServerAddress],
    *,
    client_id: str,
    on_event: EventHandler | None = None,
    **options: Any,
) -> ChatClient:
    """The engine for `identity` on `home`'s cache, not started yet. Its
    `close` also closes the cache. Raises SetupFailed (bad_cache, no_curve)
    or KeyChanged (the cache belongs to another identity of the same name)."""
    try:
        cache = Cache(home.cache, cache_key(identity.sign_seed))
    except CacheError as exc:  # (it says which file, and why)
        raise SetupFailed(str(exc), "bad_cache") from exc
    except OSError as exc:  # its directory or file cannot be made
        raise SetupFailed(f"cannot open the local cache: {exc}", "bad_cache") from exc
    try:
        live = remembered_live(cache, addresses)  # a cluster: the given ones rank first
        last = None if live else remembered_node(cache, addresses)  # a single node
        last = last if last in addresses else None  # a node the string names
        client = ChatClient(
            identity,
            cache,
            prefer(addresses, last),
            on_event=on_event,
            client_id=client_id,
            **options,
        )
    except RuntimeError as exc:  # libzmq without CURVE, or too old
        cache.close()
        raise SetupFailed(str(exc), "no_curve") from exc
    except BaseException:
        cache.close()
        raise
    client.owns_cache = True
    if isinstance(client.conn, Connection):
        client.conn.servers.recall(live, last)
    client.subscribe(Recall(client, addresses))
    return client
