"""The server's part in peer-to-peer mode: `announce` keeps a user's signed
record (its own, signed by the identity key it registered, the newest) and
`lookup` hands it out; anything else gets its code and changes nothing."""

from __future__ import annotations

import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

from support.raw import RawClient
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
        reply = bob.request(m.Lookup(users=["alice", "bob"]))
        assert isinstance(reply, m.Directory)
        entries = {e.user: e.peer for e in reply.users}
        assert entries["bob"] is None
        held = entries["alice"]
        assert held is not None and p.decode_record(held.record).ts == 2
    finally:
        alice.close()
        bob.close()
        ctx.term()
