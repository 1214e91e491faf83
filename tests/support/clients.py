"""In-process engine clients against a real server, with fast liveness
settings so that failover tests take seconds, not minutes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.engine import ChatClient
from curvechat.client.state import Backoff
from curvechat.crypto.identity import Identity
from curvechat.protocol.connect import parse_connect

FAST = {
    "ping_interval": 0.3,
    "liveness": 5,  # a 1.5 s window: tests share two cores with servers and etcd
    "connect_timeout": 1.5,
    "request_timeout": 5.0,
    "backoff": Backoff(base=0.05, cap=0.5),
}


class Recorder:
    """Collects the engine's events and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


class ClientFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.clients: list[ChatClient] = []
        self.identities: dict[str, Identity] = {}

    async def make(
        self,
        user: str,
        connect: str,
        *,
        ready: bool = True,
        identity: Identity | None = None,
        home_name: str | None = None,
        **options: Any,
    ) -> tuple[ChatClient, Recorder]:
        identity = identity or self.identities.get(user) or Identity.generate(user)
        self.identities[user] = identity
        home = self.root / (home_name or user)
        home.mkdir(parents=True, exist_ok=True)
        cache = Cache(home / "cache.db", cache_key(identity.sign_seed))
        recorder = Recorder()
        client = ChatClient(
            identity, cache, parse_connect(connect), on_event=recorder, **{**FAST, **options}
        )
        await client.start()
        self.clients.append(client)
        if ready:
            assert await client.wait_ready(20), f"{user} did not get ready: {client.status}"
        return client, recorder

    async def close(self, client: ChatClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
            await client.close()
            client.cache.close()

    async def close_all(self) -> None:
        for client in list(self.clients):
            await self.close(client)
