"""History shared after an add (`share_keys`) through one node reaches a
newcomer connected to another: that node learns of the packets from the
etcd watch and tells the newcomer (`push_room` `keys`), as the node that
took them tells its own connections."""

from __future__ import annotations

import asyncio

from curvechat.protocol import messages as m

from .conftest import Nodes
from support.clients import ClientFactory

EPOCHS = 150  # past the add's newest 100: the rest goes in share_keys
FAST = ("--rate-epochs", "1000000")  # a busy room's rotations, made here in a second


def opened(client, room):  # type: ignore[no-untyped-def]
    return [(r.text, r.error) for r in client.cache.messages(room, limit=100)]


async def test_a_newcomer_on_another_node_gets_the_history_shared_through_the_first(
    nodes: Nodes, clients: ClientFactory
) -> None:
    a, b = nodes.start("a", extra=FAST), nodes.start("b", extra=FAST)
    alice, _ = await clients.make("alice", a.connect)
    await clients.make("bob", a.connect)
    await alice.create_room("busy", ["bob"])
    await alice.send("busy", "from epoch 0")
    async with alice.parts.lock:
        for epoch in range(1, EPOCHS):
            await alice.parts.rotate("busy", epoch)
    await alice.send("busy", f"from epoch {EPOCHS - 1}")

    carol, carol_events = await clients.make("carol", b.connect)
    # The history goes only once carol, on B, has fetched the add's keys: she
    # learns of the rest from B alone, which did not take it.
    ask = alice.parts.ask

    async def share_later(req, kind, **kw):  # type: ignore[no-untyped-def]
        if isinstance(req, m.ShareKeys):
            for _ in range(500):
                if carol.parts.core.held("busy"):
                    break
                await asyncio.sleep(0.02)
        return await ask(req, kind, **kw)

    alice.parts.ask = share_later  # type: ignore[method-assign]
    result = await alice.invite("busy", "carol")
    assert result.shared_history and result.epochs_not_shared == 0
    want = [("from epoch 0", None), (f"from epoch {EPOCHS - 1}", None)]
    await carol_events.until(lambda: opened(carol, "busy") == want, timeout=60)
    assert sorted(carol.parts.core.held("busy")) == list(range(EPOCHS))
