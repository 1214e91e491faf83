"""What anyone on the network, or any key, can make a node do for the
operator's view. `/readyz` (server/http.py) needs no token, and on etcd each
store probe is a write: concurrent and repeated asks share one probe a
second, and a failure says what failed without the store's own details.
Client events (server/liveness.py) share a node-wide allowance."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer

from curvechat.server.http import READY_REUSE_S, make_http_app
from curvechat.server.httpguard import HttpGuard
from curvechat.store import StoreUnavailable


class Store:
    def __init__(self) -> None:
        self.probes = 0
        self.fail = False

    async def ping(self) -> None:
        self.probes += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise StoreUnavailable("etcd member at 10.1.2.3:2379 refused: details")


async def test_asks_of_readyz_share_one_store_probe_a_second() -> None:
    store = Store()
    node = SimpleNamespace(store=store, node_name="n", boot="b")
    app = make_http_app(node, HttpGuard.for_bind("127.0.0.1", "t" * 43), dashboard=False)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
        assert [a.status for a in answers] == [200] * 50
        assert store.probes == 1
        await asyncio.sleep(READY_REUSE_S + 0.1)
        store.fail = True
        answer = await client.get("/readyz")
        assert answer.status == 503 and store.probes == 2
        body = await answer.json()
        assert body["status"] == "store unavailable"
        assert "10.1.2.3" not in body["error"]


def test_client_events_have_a_node_wide_allowance() -> None:
    """Connections from throwaway keys (each a failover or a disconnect)
    must not push every other event out of the dashboard's log: client
    events get a burst of 200, then 2 a second."""
    from curvechat.server.liveness import CLIENT_EVENTS_PER_S, Liveness
    from curvechat.server.ratelimit import RateLimits

    kinds: list[str] = []

    def add(kind: str, text: str, *, level: str, user: str | None) -> None:
        kinds.append(kind)

    node = SimpleNamespace(events=SimpleNamespace(add=add), limits=RateLimits())
    liveness = Liveness(node)  # type: ignore[arg-type]
    for _ in range(1000):
        liveness._client_event("client_failover", "x arrived elsewhere", None)
    assert 200 <= len(kinds) <= 200 + CLIENT_EVENTS_PER_S
