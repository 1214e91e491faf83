"""An outbox torn down with sends in flight (the engine closed while they
wait for their answers): whatever becomes of those sends afterwards, no
exception is left unretrieved (asyncio would log each one when the
future is collected)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from curvechat.client.errors import NotConnected
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_sends_left_in_flight_at_close_leave_no_unretrieved_exception(
    server: ServerProcess,
    clients: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    await alice.create_room("torn", [])
    held: list[asyncio.Future[m.AnyReply]] = []

    def never_answered(
        reqs: list[m.Send], timeout: float | None = None
    ) -> list[asyncio.Future[m.AnyReply]]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in reqs]
        held.extend(futs)
        return futs

    monkeypatch.setattr(alice.conn, "submit_sends", never_answered)
    alice.outbox.queue_many("torn", [f"t{i}" for i in range(40)])
    for _ in range(200):
        if held:
            break
        await asyncio.sleep(0.01)
    assert held, "nothing was sent"
    await alice.close()
    # The connection's answers come too late: each send fails after its pass is gone.
    for fut in held:
        fut.set_exception(NotConnected("closed under it, by the test"))
    await asyncio.sleep(0.05)
    held.clear()
    caplog.set_level(logging.ERROR, logger="asyncio")
    gc.collect()
    await asyncio.sleep(0)
    unretrieved = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not unretrieved, unretrieved[0].getMessage()
