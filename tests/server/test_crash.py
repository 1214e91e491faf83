"""kill -9 of the server under load, then a restart: no acknowledged message
is lost, none is stored twice, and every member ends with the same history."""

from __future__ import annotations

import asyncio
from pathlib import Path

from curvechat.client.errors import ClientError
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.servers import ServerProcess

SENDERS = 4
PER_SENDER = 60


async def test_kill_9_under_load_loses_no_ack(tmp_path: Path, clients: ClientFactory) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        users = [f"u{i}" for i in range(SENDERS)]
        engines = [(await clients.make(u, server.connect))[0] for u in users]
        await engines[0].create_room("load", users[1:])
        for engine in engines[1:]:
            await engine.history("load")  # wait until each has seen the room
        acked: dict[str, int] = {}
        killed = asyncio.Event()

        async def sender(engine, idx: int) -> None:  # type: ignore[no-untyped-def]
            txns = []
            for n in range(PER_SENDER):
                while engine.cache.room("load") is None:
                    await engine.wait_ready(5)
                    await engine.history("load")
                txns.append(await engine.send("load", f"{idx}:{n}", wait=False))
                await asyncio.sleep(0)
            for txn in txns:
                ack = await engine.wait_ack(txn, 60)
                acked[txn] = ack.seq

        tasks = [asyncio.create_task(sender(e, i)) for i, e in enumerate(engines)]

        async def killer() -> None:
            while len(engines[0].cache.messages("load", limit=10_000)) < 40:
                await asyncio.sleep(0.01)
            server.kill()
            killed.set()
            server.start()

        await asyncio.gather(killer(), *tasks)
        assert killed.is_set()
        assert len(acked) == SENDERS * PER_SENDER

        # The store holds each acknowledged message exactly once, at its acked seq.
        reader = engines[0]
        items: list[m.StoredMessage] = []
        after = 0
        while True:
            reply = await reader.conn.request(m.History(room="load", after=after, limit=500))
            assert isinstance(reply, m.Messages)
            if not reply.items:
                break
            items.extend(reply.items)
            after = reply.items[-1].seq
        by_txn = {i.envelope.txn: i.seq for i in items}
        assert len(by_txn) == len(items), "a message was stored twice"
        assert [i.seq for i in items] == list(range(1, len(items) + 1))
        for txn, seq in acked.items():
            assert by_txn.get(txn) == seq, f"acknowledged {txn} at {seq} but the store disagrees"

        # Every member converges on the same history.
        total = len(items)
        for engine in engines:
            async with asyncio.timeout(30):
                while True:
                    try:
                        rows = await engine.history("load", limit=total)
                    except ClientError:
                        rows = []
                    if len(rows) == total and rows[-1].seq == total:
                        break
                    await engine.wait_ready(5)
                    await asyncio.sleep(0.05)  # a ready engine returns at once: let it work
            assert [(r.seq, r.txn) for r in rows] == [(i.seq, i.envelope.txn) for i in items]
            assert all(r.error is None for r in rows)
    finally:
        server.kill()
