"""Attacks on the trust a client puts in key packets, by a malicious server in
collusion with a (current or former) member, tried for real against the
evil node (tests/security/evil_node.py).

Each test plays the attack to its end: the server records every envelope the
victim sends, before the real handler looks at it, and the colluding member
then tries every key she holds on them. The assertions are the security
promise: none of the victim's messages opens for her, and the victim was told
of the packet she refused."""

from __future__ import annotations

import contextlib
import json

import pytest

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient
from curvechat.client.errors import ClientError
from curvechat.crypto.envelope import open_message
from curvechat.crypto.errors import CryptoError
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import new_epoch_key, unwrap_key_packet, wrap_epoch_key
from curvechat.protocol import decode_envelope, encode
from curvechat.protocol import messages as m

from .conftest import EvilServer
from .test_malicious_server import resync
from support.clients import ClientFactory, Recorder

SEND_TIMEOUT = 10.0


def captured(evil: EvilServer, room: str, sender: str) -> list[m.Envelope]:
    """The envelopes `sender` sent in `room` while the node captured sends,
    whether the node stored them or refused them."""
    path = evil.data / "sends.jsonl"
    if not path.exists():
        return []
    envelopes = [
        decode_envelope(bytes.fromhex(json.loads(line)["envelope"]))
        for line in path.read_text().splitlines()
    ]
    return [e for e in envelopes if e.room == room and e.sender == sender]


def readable(envelopes: list[m.Envelope], keys: list[bytes], sender_pub: bytes) -> list[str]:
    """The texts of `envelopes` that open under one of `keys`."""
    texts = []
    for env in envelopes:
        for key in keys:
            with contextlib.suppress(CryptoError):
                texts.append(open_message(env, key=key, sender_sign_pub=sender_pub).text)
                break
    return texts


async def held_keys(client: ChatClient, room: str, identities: dict[str, Identity]) -> list[bytes]:
    """Every epoch key of `room` the server holds for `client`'s user, as she
    unwraps them herself with her identity and the real keys of the senders."""
    identity = identities[client.me]
    reply = await client.conn.request(m.FetchKeys(room=room, min_epoch=0))
    assert isinstance(reply, m.KeyPackets)
    keys = []
    for packet in reply.packets:
        key = unwrap_key_packet(identity, packet, identities[packet.sender].sign_pub)
        assert key.room == room
        keys.append(key.key)
    return keys


async def room_info(client: ChatClient, room: str) -> m.RoomInfo:
    """The room as the server really has it (asked with a member's connection)."""
    reply = await client.conn.request(m.ListRooms())
    assert isinstance(reply, m.RoomList)
    (info,) = [r for r in reply.rooms if r.room == room]
    return info


async def try_send(client: ChatClient, room: str, text: str) -> None:
    """Send, and accept any outcome: a fixed client may send under an honest
    key, rotate first, or refuse; today's is refused by the server, after it
    has already sealed the text under the attacker's key."""
    with contextlib.suppress(ClientError):
        await client.send(room, text, timeout=SEND_TIMEOUT)


def problems(events: Recorder, room: str) -> list[str]:
    return [p.message for p in events.of(ev.Problem) if p.room == room]


async def test_key_packet_of_another_room_is_refused(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """The server answers alice's key fetch for private room `y` with her
    genuine packets of room `x` (which mallory is in), and says `y` is at
    x's epoch, so that she fetches. A packet names its room, inside the box
    too: filing x's key under y would make alice encrypt y for mallory."""
    evil.attack(capture_sends=True)
    bob, _ = await clients.make("bob", evil.connect, rotate_after_messages=2)
    alice, alice_ev = await clients.make("alice", evil.connect)
    mallory, _ = await clients.make("mallory", evil.connect)
    await clients.make("carol", evil.connect)
    # bob, the honest sender of every packet here, creates both rooms. Both
    # logs are 3 ops long (create + 2 adds), so the `after_op` of x's epochs
    # is as plausible in y as in x.
    await bob.create_room("x", ["alice", "mallory"])
    await bob.create_room("y", ["alice", "carol"])
    for i in range(5):  # two messages an epoch: x reaches epoch 2
        await bob.send("x", f"x message {i}")
    x_epoch = (await room_info(bob, "x")).epoch
    assert x_epoch >= 2, x_epoch
    assert (await room_info(bob, "y")).epoch == 0
    await resync(alice, alice_ev)
    assert set(alice.members("y")) == {"alice", "bob", "carol"}
    await alice.send("y", "before the attack", timeout=SEND_TIMEOUT)
    assert len(captured(evil, "y", "alice")) == 1  # the capture works

    mallory_keys = await held_keys(mallory, "x", clients.identities)
    assert len(mallory_keys) == x_epoch + 1
    evil.attack(
        capture_sends=True,
        swap_keys={"room": "y", "from": "x"},
        report_epoch={"room": "y", "epoch": x_epoch},
    )
    await resync(alice, alice_ev)
    secret = "y is for bob and carol only"
    await try_send(alice, "y", secret)

    sent = captured(evil, "y", "alice")
    assert len(sent) >= 1
    leaked = readable(sent, mallory_keys, clients.identities["alice"].sign_pub)
    assert leaked == [], f"mallory read alice's messages in y with x's keys: {leaked}"
    assert problems(alice_ev, "y"), "alice was not told of the refused key packets"


@pytest.mark.parametrize("departure", ["leaves", "is_removed"])
async def test_departed_member_cannot_choose_the_next_key(
    evil: EvilServer, clients: ClientFactory, departure: str
) -> None:
    """mallory made room `r` and added alice and bob; then she left (or an
    admin removed her). Having added them proves nothing about later epochs:
    a key she makes after her departure, delivered by the server, must not be
    used, or she reads everything said after she is gone."""
    evil.attack(capture_sends=True)
    mallory, _ = await clients.make("mallory", evil.connect)
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    identities = clients.identities
    await mallory.create_room("r", ["alice", "bob"])
    mallory_keys = await held_keys(mallory, "r", identities)
    if departure == "leaves":
        await mallory.leave("r")
    else:
        await mallory.promote("r", "bob")
        await bob.remove("r", "mallory")  # a rotation: epoch 1, without mallory
    await resync(alice, alice_ev)
    assert set(alice.members("r")) == {"alice", "bob"}
    info = await room_info(bob, "r")
    assert info.epoch == (0 if departure == "leaves" else 1)

    # mallory, outside any client, makes the next epoch's key, based on the
    # op that removed her, and boxes it for the remaining members.
    forged = new_epoch_key("r", info.epoch + 1, after_op=info.op_head)
    packets = [
        wrap_epoch_key(identities["mallory"], forged, user, identities[user].sign_pub)
        for user in ("alice", "bob")
    ]
    mallory_keys.append(forged.key)
    evil.attack(
        capture_sends=True,
        inject_keys={"room": "r", "packets": [encode(p).hex() for p in packets]},
        report_epoch={"room": "r", "epoch": forged.epoch},
    )
    await resync(alice, alice_ev)
    secret = "now that mallory is gone"
    await try_send(alice, "r", secret)

    sent = captured(evil, "r", "alice")  # alice said nothing in r before
    assert len(sent) >= 1
    leaked = readable(sent, mallory_keys, identities["alice"].sign_pub)
    assert leaked == [], f"mallory read alice's messages in r after she {departure}: {leaked}"
    assert problems(alice_ev, "r"), "alice was not told of mallory's key packet"
