"""How often a member may start a new epoch: `new_epoch` is paced per room
and member (20 at once, then `serve --rate-epochs`, default 1 a second), so
a member who starts epochs as fast as the connection's limit allows cannot
keep the other members' sends or an admin's removal from landing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from curvechat.crypto import new_epoch_key, wrap_epoch_key
from curvechat.crypto.identity import Identity
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.server import epochpace
from curvechat.server.epochpace import BURST, EpochPace

from support.raw import RawClient, Room
from support.servers import ServerProcess


def test_a_member_is_paced_per_room_on_a_clock() -> None:
    pace = EpochPace(rate=1.0)
    assert all(pace.allow("r", "mallory", now=100.0) for _ in range(int(BURST)))
    assert not pace.allow("r", "mallory", now=100.0)
    assert pace.allow("r", "bob", now=100.0)  # another member: a bucket of its own
    assert pace.allow("s", "mallory", now=100.0)  # another room too
    assert not pace.allow("r", "mallory", now=100.5)
    assert pace.allow("r", "mallory", now=101.01)


def test_the_pairs_kept_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_TRACKED (room, member) pairs, the full ones go, and then the
    oldest: a user acting in thousands of rooms a second cannot grow it."""
    monkeypatch.setattr(epochpace, "MAX_TRACKED", 8)
    pace = EpochPace(rate=1.0)
    for i in range(100):  # every pair took a token this second: none is full
        assert pace.allow(f"r{i}", "mallory", now=100.0)
        assert len(pace._buckets) <= 8
    assert ("r99", "mallory") in pace._buckets and ("r0", "mallory") not in pace._buckets


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _epoch(creator: Identity, members: list[Identity], room: str, epoch: int) -> m.NewEpoch:
    after_op = len(members) - 1  # the creation, then one add for each other member
    key = new_epoch_key(room, epoch, after_op)
    packets = [wrap_epoch_key(creator, key, u.user, u.sign_pub) for u in members]
    upload = m.EpochUpload(epoch=epoch, after_op=after_op, packets=packets)
    return m.NewEpoch(room=room, epoch=upload)


def test_a_flood_of_epochs_is_refused_with_a_code_and_others_go_on(
    server: ServerProcess, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    alice, mallory = Identity.generate("alice"), Identity.generate("mallory")
    clients = {who.user: RawClient(ctx, server.connect, who) for who in (alice, mallory)}
    for client in clients.values():
        client.register()
    room = Room(alice, "paced", [mallory])
    assert isinstance(clients["alice"].request(room.create), m.RoomChanged)
    members = [alice, mallory]
    replies = [
        clients["mallory"].request(_epoch(mallory, members, "paced", epoch))
        for epoch in range(1, 41)
    ]
    took = [r for r in replies if isinstance(r, m.RoomChanged)]
    refused = [r for r in replies if isinstance(r, m.Error)]
    assert len(took) in (int(BURST), int(BURST) + 1), replies  # a second may pass
    assert {r.code for r in refused} == {ErrorCode.RATE_LIMITED}
    assert "faster than 1 a second" in refused[0].message
    # alice starts the next epoch at once
    nxt = len(took) + 1
    assert isinstance(clients["alice"].request(_epoch(alice, members, "paced", nxt)), m.RoomChanged)
    time.sleep(1.1)  # and mallory may start one again a second later
    again = clients["mallory"].request(_epoch(mallory, members, "paced", nxt + 1))
    assert isinstance(again, m.RoomChanged), again
    for client in clients.values():
        client.close()
