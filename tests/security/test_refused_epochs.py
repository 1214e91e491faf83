"""Epochs whose packet for us is garbage, and a member who only reads.

A member (mallory) starts epochs with a packet for alice that does not open,
and a good one for everyone else. alice does not send, so every such epoch
stays above the newest key she holds, and every message she cannot open
(mallory's, or bob's under mallory's epoch) made her client fetch all of
them again and open each one: a cost per message that grew by one packet a
second, for as long as mallory kept at it. Now a packet refused for good is
not opened again, and the fetches of a connection start past the epochs
whose packet was refused for good (a new connection asks again, should
another node serve the genuine packet).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.client.trust import rules
from curvechat.crypto import new_epoch_key, wrap_epoch_key
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.counting import count_calls
from support.raw import RawClient, Room
from support.servers import ServerProcess

EPOCHS = 120


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A node that lets a member start epochs as fast as she asks (what the
    pace allows in two minutes, made in a second)."""
    proc = ServerProcess(tmp_path / "node", extra_args=("--rate-epochs", "1000000")).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


async def test_a_reader_does_not_fetch_and_open_refused_epochs_at_every_message(
    server: ServerProcess,
    clients: ClientFactory,
    ctx: zmq.Context[zmq.Socket[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, alice_events = await clients.make("alice", server.connect)
    mallory = Identity.generate("mallory")
    raw = RawClient(ctx, server.connect, mallory)
    raw.register()
    room = Room(mallory, "garbage", [alice.identity])
    assert isinstance(raw.request(room.create), m.RoomChanged)
    after_op = 1
    for epoch in range(1, EPOCHS + 1):
        key = new_epoch_key("garbage", epoch, after_op)
        good = wrap_epoch_key(mallory, key, "alice", alice.identity.sign_pub)
        bad = m.KeyPacket(
            room="garbage", epoch=epoch, recipient="alice", sender="mallory", box=os.urandom(80)
        )
        packets = [bad, wrap_epoch_key(mallory, key, "mallory", mallory.sign_pub)]
        assert good.box != bad.box
        upload = m.EpochUpload(epoch=epoch, after_op=after_op, packets=packets)
        assert isinstance(raw.request(m.NewEpoch(room="garbage", epoch=upload)), m.RoomChanged)

    opened = count_calls(monkeypatch, rules, "unwrap_key_packet")
    fetched = 0
    real_ask = alice.parts.ask

    async def counting_ask(req, kind, **kw):  # type: ignore[no-untyped-def]
        nonlocal fetched
        reply = await real_ask(req, kind, **kw)
        if isinstance(reply, m.KeyPackets):
            fetched += len(reply.packets)
        return reply

    monkeypatch.setattr(alice.parts, "ask", counting_ask)

    def rows() -> int:
        return len(alice.cache.messages("garbage", limit=1000))

    await alice_events.until(lambda: "garbage" in [r.room for r in alice.rooms()])
    for i in range(10):
        key = new_epoch_key("garbage", EPOCHS, after_op)  # mallory's own, any will do
        send = m.Send(envelope=room_send(mallory, key.key, i))
        assert isinstance(raw.request(send), m.SendAck)
        await alice_events.until(lambda n=i: rows() == n + 1, timeout=30)
    raw.close()
    # Each of the 120 garbage packets opened once, and fetched at most twice
    # (the sync that first met the room, then the first message); before,
    # ten messages fetched and opened all of them each time (1,200 or more).
    assert opened[0] <= EPOCHS + 5, opened
    assert fetched <= 2 * EPOCHS + 5, fetched
    (rule,) = {r.error for r in alice.cache.messages("garbage", limit=1000)}
    assert rule is not None and "M2" in rule  # no key: shown as unreadable
    problems = [e for e in alice_events.events if "refused" in str(e)]
    assert len(problems) <= 3, problems


def room_send(mallory: Identity, key: bytes, i: int) -> m.Envelope:
    from curvechat.crypto import Plaintext, seal_message

    return seal_message(
        mallory,
        room="garbage",
        epoch=EPOCHS,
        key=key,
        txn=f"txn-{i:08d}",
        plaintext=Plaintext(text=f"message {i}", ts=1),
    )
