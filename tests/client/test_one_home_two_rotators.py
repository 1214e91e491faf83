"""Two processes of one home (the terminal client and a `send -`) sending
into one room at once, each rotating the room's key as its count runs out.
Each must learn the epoch keys the other stored in their shared cache:
before, a process kept its own copy of the room's keys and never saw the
other's (the insert of a key already stored changed nothing), so it asked
for an epoch the other had made, was refused `conflict` ("the next epoch is
N") again and again, and failed its sends. Now no send fails and every
message is stored once."""

from __future__ import annotations

import asyncio

from curvechat.client import events as ev

from support.clients import ClientFactory
from support.servers import ServerProcess

PER = 60


async def test_both_processes_send_everything_across_each_others_rotations(
    server: ServerProcess, clients: ClientFactory
) -> None:
    one, ones = await clients.make("alice", server.connect, rotate_after_messages=4)
    await one.create_room("r", [])
    two, twos = await clients.make("alice", server.connect, rotate_after_messages=4)
    txns = one.queue_many("r", [f"one {i}" for i in range(PER)])
    txns += two.queue_many("r", [f"two {i}" for i in range(PER)])

    def settled() -> bool:
        done = {e.txn for r in (ones, twos) for e in r.of(ev.SendAcked) + r.of(ev.SendFailed)}
        return done >= set(txns)

    await asyncio.wait_for(ones.until(settled, 60), 70)
    failed = [(e.txn, e.code, e.message) for r in (ones, twos) for e in r.of(ev.SendFailed)]
    assert failed == []
    # A third process of alice's, on a home of its own, reads the room back.
    fresh, _ = await clients.make("alice", server.connect, home_name="alice-fresh")
    rows = await fresh.history("r", limit=1000)
    assert [r.error for r in rows if r.error is not None] == []
    assert sorted(r.text for r in rows) == sorted(
        [f"one {i}" for i in range(PER)] + [f"two {i}" for i in range(PER)]
    )
