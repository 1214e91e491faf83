"""Pages an honest node cuts at its reply budget (512 KiB of envelopes):
a gap fill, or a range asked for again, goes on after such a page instead
of taking it for a server that will not give the rest (`withheld.py`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from curvechat.client import events as ev
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from .conftest import EvilServer
from .test_withheld_messages import reconnect, seqs, told
from support.clients import ClientFactory
from support.raw import RawClient, Room
from support.servers import ServerProcess

BIG = "\U0001f600" * 16_000  # 64,000 bytes of text: an envelope of about 64 KiB


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _send_all(raw: RawClient, sends: list[m.Send], window: int = 16) -> None:
    def ack() -> None:
        while isinstance(reply := raw.recv(30), m.Pong):
            pass
        assert isinstance(reply, m.SendAck), reply

    for i, s in enumerate(sends):
        raw.send(s)
        if i >= window:
            ack()
    for _ in range(min(window, len(sends))):
        ack()


async def test_a_gap_filled_by_pages_cut_at_the_budget_is_not_called_withheld(
    bulk_server: ServerProcess, clients: ClientFactory, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """mallory floods a room with 64 KiB messages while vic's client reads
    nothing for 3 s: the node holds back the pushes past vic's budget but
    pushes the small one after them, and vic fills the gap below it with
    pages of about 8 messages. Each such page used to end the fill: the
    rest was recorded as withheld and vic told the node hid them."""
    vic, vic_ev = await clients.make("vic", bulk_server.connect)
    mallory, bob = Identity.generate("mallory"), Identity.generate("bob")
    m_raw = RawClient(ctx, bulk_server.connect, mallory)
    b_raw = RawClient(ctx, bulk_server.connect, bob)
    try:
        m_raw.register()
        b_raw.register()
        room = Room(mallory, "flood", [vic.identity, bob])
        assert isinstance(m_raw.request(room.create), m.RoomChanged)
        await vic_ev.until(lambda: "flood" in [r.room for r in vic.rooms()])

        def flood() -> None:
            _send_all(m_raw, [room.send(mallory, BIG) for _ in range(90)])
            _send_all(b_raw, [room.send(bob, "bob's paste " + BIG[:15_000])])
            _send_all(m_raw, [room.send(mallory, BIG) for _ in range(30)])
            _send_all(m_raw, [room.send(mallory, "small")])

        thread = threading.Thread(target=flood)
        thread.start()
        time.sleep(3.0)  # vic's loop reads nothing meanwhile
        thread.join(60)
        await vic_ev.until(lambda: seqs(vic, "flood") == list(range(1, 123)), timeout=60)
        assert vic.cache.withheld("flood", 100) == []
        assert not [e for e in vic_ev.of(ev.Problem) if "did not hand out" in e.message]
    finally:
        m_raw.close()
        b_raw.close()


async def test_a_withheld_range_asked_again_comes_whole_over_cut_pages(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """39 messages of 64 KiB withheld: bob's sync gets pages that hold
    nothing and says `more` (it used to ask for the same page forever,
    never ready); a push after them makes the gap fill record them. Once
    they are handed out, the one connection after asks for them over pages
    of about 8 and takes them all (it took one page a connection)."""
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await clients.close(bob)
    alice.queue_many("r", [BIG] * 40)
    await alice_ev.until(lambda: len(alice_ev.of(ev.SendAcked)) == 40, timeout=60)
    evil.attack(hole={"room": "r", "seqs": list(range(2, 41))})
    bob, bob_ev = await clients.make("bob", evil.connect)  # ready, or it fails here
    assert seqs(bob, "r") == [1]
    await alice.send("r", "small")
    await bob_ev.until(lambda: seqs(bob, "r") == [1, 41])
    assert bob.cache.withheld("r", 100) == [(2, 40)] and told(bob_ev)
    evil.attack()
    await reconnect(bob, bob_ev)
    assert seqs(bob, "r") == list(range(1, 42))
    assert bob.cache.withheld("r", 100) == []
