"""The server's part in peer-to-peer mode: `announce` keeps a user's signed
record (its own, signed by the identity key it registered, the newest) and
`lookup` hands it out to members of a room the user shares; anything else
gets its code and changes nothing."""

from __future__ import annotations

import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

from support.raw import RawClient, Room
from support.servers import ServerProcess


def record(
    identity: Identity, ts: int, *, user: str = "", signer: Identity | None = None
) -> m.SignedRecord:
    raw = p.encode_record(
        p.PeerRecord(
            user=user or identity.user,
            transport_pub=identity.transport_pub,
            endpoints=[f"tcp://127.0.0.1:{1000 + ts}"],
            ts=ts,
        )
    )
    return m.SignedRecord(record=raw, sig=(signer or identity).sign(p.DOMAIN_RECORD + raw))


def code(reply: m.AnyReply) -> str:
    return reply.code if isinstance(reply, m.Error) else type(reply).__name__


def test_announce_and_lookup(server: ServerProcess) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    alice_id, bob_id = Identity.generate("alice"), Identity.generate("bob")
    alice, bob = RawClient(ctx, server.connect, alice_id), RawClient(ctx, server.connect, bob_id)
    carol = RawClient(ctx, server.connect, Identity.generate("carol"))
    try:
        # unregistered: not_registered
        assert code(alice.request(m.Announce(record=record(alice_id, 1)))) == "not_registered"
        alice.register()
        bob.register()
        assert code(alice.request(m.Announce(record=record(alice_id, 2)))) == "Announced"
        assert code(alice.request(m.Announce(record=record(bob_id, 3)))) == "forbidden"
        forged = record(alice_id, 4, signer=bob_id)
        assert code(alice.request(m.Announce(record=forged))) == "bad_signature"
        junk = m.SignedRecord(record=b"\x01\x02", sig=bytes(64))
        assert code(alice.request(m.Announce(record=junk))) == "bad_frame"
        # an older record does not replace the newer one
        assert code(alice.request(m.Announce(record=record(alice_id, 1)))) == "Announced"
        # a user's record (its addresses) goes only to members of a room it
        # shares, and to itself; its keys to anyone registered
        assert peers(bob, "alice", "bob") == {"alice": None, "bob": None}
        assert peers(alice, "alice") == {"alice": 2}
        assert code(alice.request(Room(alice_id, "den", [bob_id]).create)) == "RoomChanged"
        assert peers(bob, "alice", "bob") == {"alice": 2, "bob": None}
        carol.register()
        assert peers(carol, "alice") == {"alice": None}
    finally:
        alice.close()
        bob.close()
        carol.close()
        ctx.term()


def peers(client: RawClient, *users: str) -> dict[str, int | None]:
    """What a lookup by `client` gives of each user: its record's time, or None."""
    reply = client.request(m.Lookup(users=list(users)))
    assert isinstance(reply, m.Directory), reply
    return {
        e.user: None if e.peer is None else p.decode_record(e.peer.record).ts for e in reply.users
    }
