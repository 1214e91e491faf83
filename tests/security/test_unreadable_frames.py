"""A node whose replies cannot be read: the client says so, backs off and
loses nothing; a push of a kind it does not know is skipped, as a newer
node's would be.

The frames are cut short on the wire side of the client's decoder (the real
bytes, truncated), from a real node over CURVE.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from curvechat.client import events as ev
from curvechat.client import nodesocket
from curvechat.client.errors import NotConnected
from curvechat.client.state import ConnState
from curvechat.protocol import decode_server_frame
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.servers import ServerProcess


def _carries_an_ack(data: bytes) -> bool:
    msg = decode_server_frame(data).msg
    if isinstance(msg, m.Batch):
        return any(isinstance(item.msg, m.SendAck) for item in msg.items)
    return isinstance(msg, m.SendAck)


def garble(monkeypatch: pytest.MonkeyPatch, which: Callable[[bytes], bool]) -> dict[str, int]:
    """While `state["on"]`, frames `which` picks reach the decoder cut short."""
    state = {"on": 1, "cut": 0}
    real = nodesocket.decode_server_frame

    def decode(data: bytes) -> m.ServerFrame:
        if state["on"] and which(data):
            state["cut"] += 1
            data = data[: len(data) // 2]
        return real(data)

    monkeypatch.setattr(nodesocket, "decode_server_frame", decode)
    return state


async def test_unreadable_acks_drop_the_connection_and_the_message_waits(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, events = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    state = garble(monkeypatch, _carries_an_ack)
    await alice.send("r", "through a broken node", wait=False)

    def told() -> list[str]:
        return [
            e.status.detail
            for e in events.of(ev.StatusChanged)
            if e.status.state is ConnState.RECONNECTING and "cannot read" in e.status.detail
        ]

    # Told at once (not after a request's timeout), and again with a longer
    # back-off each time the node does it again.
    await events.until(lambda: len(told()) >= 2, timeout=15)
    assert told()[0] == "the node sent a frame this client cannot read (bad_frame)"
    lost = [
        e.status
        for e in events.of(ev.StatusChanged)
        if e.status.state is ConnState.RECONNECTING and "cannot read" in e.status.detail
    ]
    assert lost[1].attempt > lost[0].attempt
    assert [p.text for p in alice.pending()] == ["through a broken node"]
    assert not events.of(ev.SendFailed)

    state["on"] = 0
    await events.until(lambda: alice.pending() == [], timeout=20)
    await bob_events.until(lambda: [r.text for r in bob.cache.messages("r")] != [])
    assert [r.text for r in bob.cache.messages("r")] == ["through a broken node"]
    assert [r.text for r in alice.cache.messages("r")] == ["through a broken node"]
    assert state["cut"] >= 2


async def test_a_push_that_cannot_be_read_is_skipped(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A newer node's push of a kind this client does not know, or a push of
    a known kind with a field it does not take: skipped, the connection stays."""
    alice, events = await clients.make("alice", server.connect)
    await alice.create_room("r", [])
    sock = alice.conn._sock
    assert sock is not None
    for msg in ({"type": "push_later", "x": 1}, {"type": "push_room", "room": 7}):
        sock._read_one(msgspec.msgpack.encode({"v": 1, "rid": 0, "msg": msg}))
    await alice.send("r", "still here")
    assert alice.conn._sock is sock
    assert not [e for e in events.of(ev.StatusChanged) if e.status.state is ConnState.RECONNECTING]


async def test_a_reply_that_cannot_be_read_drops_the_connection(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, events = await clients.make("alice", server.connect)
    garble(monkeypatch, lambda data: isinstance(decode_server_frame(data).msg, m.RoomList))
    with pytest.raises(NotConnected):
        await alice.conn.request(m.ListRooms(), timeout=30)
    await events.until(
        lambda: any(
            "cannot read (bad_frame)" in e.status.detail for e in events.of(ev.StatusChanged)
        )
    )
