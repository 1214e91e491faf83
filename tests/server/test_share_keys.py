"""`share_keys` against a real server process: history for a member just
added, taken only from the member who added them, first packet wins."""

from __future__ import annotations

from server import test_error_codes
from server.test_error_codes import Peer, Peers, Room, add_member, create_room

from curvechat.crypto import new_epoch_key, wrap_epoch_key
from curvechat.protocol import ErrorCode, decode_server_frame
from curvechat.protocol import messages as m
from curvechat.server.epochpace import BURST

from support.servers import ServerProcess

peers = test_error_codes.peers  # the fixture: a raw peer per user, the server checked after


def rotate(member: Peer, room: Room, times: int) -> None:
    for _ in range(times):
        upload, key = room.upload(member.identity, max(room.keys) + 1)
        member.ok(m.NewEpoch(room=room.name, epoch=upload), m.RoomChanged)
        room.keys[key.epoch] = key


def history(sender: Peer, room: Room, to: Peer, epochs: range) -> list[m.KeyPacket]:
    return [
        wrap_epoch_key(sender.identity, room.keys[e], to.user, to.identity.sign_pub) for e in epochs
    ]


def share(room: Room, to: Peer, packets: list[m.KeyPacket]) -> m.ShareKeys:
    return m.ShareKeys(room=room.name, recipient=to.user, packets=packets)


def fetched(peer: Peer, room: Room) -> dict[int, bytes]:
    reply = peer.ok(m.FetchKeys(room=room.name), m.KeyPackets)
    return {p.epoch: p.box for p in reply.packets}


def add_with(admin: Peer, room: Room, who: Peer, packets: list[m.KeyPacket]) -> None:
    signed = room.op("add", admin.identity, who.identity)
    admin.ok(m.AddMember(room=room.name, op=signed, packets=packets), m.RoomChanged)
    room.applied(signed)


def test_only_the_member_who_added_the_recipient_shares_history(
    peers: Peers, server: ServerProcess
) -> None:
    alice, bob, carol, dave = (peers.registered(n) for n in ("alice", "bob", "carol", "dave"))
    room = create_room(alice, "general", [bob])
    rotate(alice, room, 3)
    add_with(alice, room, carol, history(alice, room, carol, range(3, 4)))
    # Another member (even one entitled to the keys) may not go first.
    bob.refused(share(room, carol, history(bob, room, carol, range(0, 3))), ErrorCode.FORBIDDEN)
    dave.refused(share(room, carol, history(dave, room, carol, range(0, 1))), ErrorCode.NOT_MEMBER)
    # Only for a current member, only this room's epochs, only as the sender.
    alice.refused(share(room, dave, history(alice, room, dave, range(0, 1))), ErrorCode.BAD_OP)
    future = new_epoch_key(room.name, 4, room.state.index)
    beyond = wrap_epoch_key(alice.identity, future, carol.user, carol.identity.sign_pub)
    alice.refused(share(room, carol, [beyond]), ErrorCode.BAD_OP)
    as_bob = history(bob, room, carol, range(0, 1))
    alice.refused(share(room, carol, as_bob), ErrorCode.BAD_OP)
    for_dave = history(alice, room, dave, range(0, 1))
    alice.refused(share(room, carol, for_dave), ErrorCode.BAD_OP)
    assert sorted(fetched(carol, room)) == [3]  # nothing refused was stored
    # The adder is known again after a restart (replayed from the log).
    server.restart()
    alice, bob, carol = (peers.new(p.identity) for p in (alice, bob, carol))
    alice.ok(share(room, carol, history(alice, room, carol, range(0, 3))), m.RoomChanged)
    assert sorted(fetched(carol, room)) == [0, 1, 2, 3]
    # Removed and added again by another admin: the history is now theirs to share.
    promote = room.op("promote", alice.identity, bob.identity)
    alice.ok(m.Promote(room=room.name, op=promote), m.RoomChanged)
    room.applied(promote)
    removal = room.op("remove", bob.identity, carol.identity)
    after, _ = room.state.apply(removal)
    recipients = {u: mem.key for u, mem in after.members.items()}
    upload, key = Room(after, room.key).upload(bob.identity, 4, recipients)
    bob.ok(m.RemoveMember(room=room.name, op=removal, epoch=upload), m.RoomChanged)
    room.applied(removal)
    room.keys[4] = key
    add_member(bob, room, carol)
    alice.refused(share(room, carol, history(alice, room, carol, range(0, 1))), ErrorCode.FORBIDDEN)
    bob.ok(share(room, carol, history(bob, room, carol, range(0, 1))), m.RoomChanged)


def test_a_packet_already_stored_for_the_recipient_is_kept(peers: Peers) -> None:
    alice, carol = peers.registered("alice"), peers.registered("carol")
    room = create_room(alice, "general")
    rotate(alice, room, 2)
    add_with(alice, room, carol, history(alice, room, carol, range(2, 3)))
    first = fetched(carol, room)
    # Another box for epoch 2 (a key of its own), and the missing epochs.
    other = new_epoch_key(room.name, 2, room.state.index)
    again = wrap_epoch_key(alice.identity, other, carol.user, carol.identity.sign_pub)
    reply = alice.ok(
        share(room, carol, [again, *history(alice, room, carol, range(0, 2))]), m.RoomChanged
    )
    assert (reply.info.room, reply.info.epoch) == (room.name, 2)
    now = fetched(carol, room)
    assert sorted(now) == [0, 1, 2] and now[2] == first[2] != again.box
    # Sent again, all different: nothing changes.
    alice.ok(share(room, carol, history(alice, room, carol, range(0, 3))), m.RoomChanged)
    assert fetched(carol, room) == now


def _keys_pushes(peer: Peer) -> int:
    """The `keys` pushes waiting on `peer`'s socket (and nothing else read)."""
    count = 0
    while peer.sock.poll(300):
        frame = decode_server_frame(peer.sock.recv())
        count += isinstance(frame.msg, m.RoomPush) and frame.msg.reason == "keys"
    return count


def test_a_share_that_stores_nothing_pushes_nothing_and_shares_are_paced(peers: Peers) -> None:
    """Each `keys` push makes the recipient fetch and open a page of packets:
    an inviter sending the same packets again and again (stored once, then
    ignored) once made the newcomer's client open 63,500 packets for 200
    requests."""
    alice, carol = peers.registered("alice"), peers.registered("carol")
    room = create_room(alice, "general")
    rotate(alice, room, 3)
    add_with(alice, room, carol, history(alice, room, carol, range(3, 4)))
    _keys_pushes(carol)
    alice.ok(share(room, carol, history(alice, room, carol, range(0, 3))), m.RoomChanged)
    assert _keys_pushes(carol) == 1
    replies = [
        alice.request(share(room, carol, history(alice, room, carol, range(0, 1))))
        for _ in range(int(BURST) + 5)
    ]
    assert _keys_pushes(carol) == 0  # nothing new was stored
    refused = [r for r in replies if isinstance(r, m.Error)]
    assert refused and {r.code for r in refused} == {ErrorCode.RATE_LIMITED}
    assert "history shares" in refused[0].message
