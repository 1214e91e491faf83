"""A message queued by one process of a home (a `send` waiting for its ack)
that another process of the home (the terminal client) sends and takes out
of the shared outbox first: the waiting process is answered with the seq
that process stored, not left to time out as "queued" (exit 75) for a
message that was delivered."""

from __future__ import annotations

import asyncio

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_an_ack_taken_by_another_process_answers_the_waiting_one(
    server: ServerProcess, clients: ClientFactory
) -> None:
    waiting, _ = await clients.make("alice", server.connect)
    await waiting.create_room("r", [])
    waiting.outbox.halted = True  # its passes wait (a command not yet connected)
    txn = waiting.queue("r", "hello")
    other, _ = await clients.make("alice", server.connect)
    other.outbox.wake.set()  # the other process's pass sends what the outbox holds

    def gone() -> bool:
        return not any(i.txn == txn for i in other.pending())

    for _ in range(100):
        if gone():
            break
        await asyncio.sleep(0.05)
    assert gone(), "the other process did not send it"
    waiting.outbox.halted = False
    waiting.outbox.wake.set()
    ack = await waiting.wait_ack(txn, 5)
    stored = waiting.cache.messages("r")
    assert [(r.seq, r.txn, r.text) for r in stored] == [(ack.seq, txn, "hello")]
