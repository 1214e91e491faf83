"""What fetching key packets can cost a client: a malicious server that
answers every fetch with a full page of packets the client refuses (each a
new box, so each one opened and told) cannot keep the client's lock for
ever, nor make it remember more than its cap of refusals."""

from __future__ import annotations

import asyncio
import os

from curvechat.client.sync import MAX_KEY_PAGES
from curvechat.client.trust.refusals import MAX_REMEMBERED
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_PAGE

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_endless_pages_of_refused_packets_end(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    carol, _ = await clients.make("carol", server.connect)
    await alice.create_room("r", ["carol"])
    parts = carol.parts
    for _ in range(500):  # carol has the room's genuine key first
        if parts.core.held("r"):
            break
        await asyncio.sleep(0.02)
    real_ask = parts.ask
    served = 0

    async def lying_ask(req, kind, **kw):  # type: ignore[no-untyped-def]
        nonlocal served
        if not isinstance(req, m.FetchKeys):
            return await real_ask(req, kind, **kw)
        served += 1
        await asyncio.sleep(0)
        first = req.min_epoch
        return m.KeyPackets(
            room="r",
            packets=[
                m.KeyPacket(
                    room="r", epoch=e, recipient="carol", sender="alice", box=os.urandom(80)
                )
                for e in range(first, first + MAX_PAGE)
            ],
        )

    parts.ask = lying_ask  # type: ignore[method-assign]
    try:
        for _ in range(4):  # what four `keys` pushes run
            async with parts.lock:  # (the engine's own fetches wait meanwhile)
                before = served
                await carol.sync.refresh("r", all_keys=True)
                # one page of history (it filed nothing), then at most
                # MAX_KEY_PAGES forward: the rest waits for the next fetch
                assert served - before == 1 + MAX_KEY_PAGES
    finally:
        parts.ask = real_ask  # type: ignore[method-assign]
    told = parts.core._refusals._told
    assert sum(len(marks) for marks in told.values()) <= MAX_REMEMBERED
    assert sorted(parts.core.held("r")) == [0]  # nothing it refused was filed
    await carol.send("r", "still here")  # and the client goes on
