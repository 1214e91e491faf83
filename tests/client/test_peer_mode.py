"""Peer-to-peer mode with a real server process and real CURVE sockets:
three members keep talking after the server is killed (one of them reaches
only one other, so its messages travel by anti-entropy), and when the server
restarts every client ends with the server's history, each message once
(the chaos checker's history check).

A non-member's link to a listener is refused by ZAP; a forged envelope
relayed by a member is refused; bad frames get an error code and the
listener keeps serving."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq.asyncio
from chaos.checker import check

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient
from curvechat.client.errors import PeerUnreachable
from curvechat.client.peer.core import PeerCore
from curvechat.client.peer.heard import MAX_HEARD
from curvechat.client.peer.link import PeerLink
from curvechat.client.peer.shell import PeerOptions, now_ms
from curvechat.client.state import ConnState
from curvechat.client.trust import TrustCore
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess

ROOM = "r"


def options(reach: set[str] | None = None) -> PeerOptions:
    return PeerOptions(
        bind="tcp://127.0.0.1:*",
        interval=0.2,
        timeout=1.0,
        reach=None if reach is None else reach.__contains__,
    )


@dataclass
class Member:
    name: str
    client: ChatClient
    events: Recorder


@pytest.fixture
async def trio(
    tmp_path: Path, clients: ClientFactory
) -> AsyncIterator[tuple[ServerProcess, dict[str, Member]]]:
    """alice, bob and carol in room r, each listening for peers; carol dials
    only alice and bob never dials carol (carol reaches only alice)."""
    server = ServerProcess(tmp_path / "node").start()
    reach = {"alice": None, "bob": {"alice"}, "carol": {"alice"}}
    members: dict[str, Member] = {}
    try:
        for name in ("alice", "bob", "carol"):
            client, events = await clients.make(name, server.connect, peers=options(reach[name]))
            members[name] = Member(name, client, events)
        await members["alice"].client.create_room(ROOM, ["bob", "carol"])
        for mem in members.values():
            await mem.events.until(lambda c=mem.client: bool(c.core.held(ROOM)))
        for _ in range(2):  # first everyone announces, then everyone looks up
            for mem in members.values():
                assert mem.client.peer is not None
                await mem.client.peer.publish()
        for mem in members.values():
            assert mem.client.peer is not None
            others = {n for n in members if n != mem.name}
            assert {r.user for r in mem.client.peer.core.peers()} == others
        yield server, members
    finally:
        server.kill()


def provisional(mem: Member) -> set[str]:
    return {i.text for i in mem.client.provisional(ROOM)}


async def test_three_members_talk_without_a_server_and_converge(
    trio: tuple[ServerProcess, dict[str, Member]],
) -> None:
    server, members = trio
    ops: list[dict[str, Any]] = []
    t0 = time.monotonic()
    await members["alice"].client.send(ROOM, "before the outage")
    ops.append(
        _op("alice", members["alice"].client.cache.messages(ROOM)[-1].txn, "before the outage", t0)
    )
    for mem in members.values():
        await mem.events.until(lambda c=mem.client: len(c.cache.messages(ROOM)) == 1)
    server.kill()
    for mem in members.values():
        await mem.events.until(lambda c=mem.client: c.status.state is not ConnState.LIVE)
    texts = {name: [f"{name} offline {i}" for i in range(3)] for name in members}
    for i in range(3):
        for name, mem in members.items():
            txn = await mem.client.send(ROOM, texts[name][i], wait=False)
            assert isinstance(txn, str)
            ops.append(_op(name, txn, texts[name][i], t0))
    everything = {t for ts in texts.values() for t in ts}
    for mem in members.values():
        await mem.events.until(lambda m=mem: provisional(m) == everything, timeout=30)
    # carol never dials bob and bob never dials carol: what they have of each
    # other came through alice
    carol_got = [e for e in members["carol"].events.of(ev.PeerMessage) if e.sender == "bob"]
    assert carol_got and {e.via for e in carol_got} == {"alice"}
    bob_got = [e for e in members["bob"].events.of(ev.PeerMessage) if e.sender == "carol"]
    assert bob_got and {e.via for e in bob_got} == {"alice"}
    # each shown once, in one provisional order everywhere
    for mem in members.values():
        shown = [(e.sender, e.txn) for e in mem.events.of(ev.PeerMessage)]
        assert len(shown) == len(set(shown)) == 6
    orders = {tuple(i.txn for i in m.client.provisional(ROOM)) for m in members.values()}
    assert len(orders) == 1
    # the status line's figures: members answering in the last round
    for name, n in {"alice": 2, "bob": 1, "carol": 1}.items():
        mem = members[name]
        await mem.events.until(
            lambda m=mem, n=n: m.events.of(ev.PeerStatus)[-1:] == [ev.PeerStatus(True, n)]
        )
    # nothing provisional is in the history: only what the server stored
    for mem in members.values():
        assert [r.text for r in mem.client.cache.messages(ROOM)] == ["before the outage"]

    server.start()
    for mem in members.values():
        await mem.events.until(
            lambda c=mem.client: (
                len(c.cache.messages(ROOM)) == 10 and not c.pending() and not c.provisional(ROOM)
            ),
            timeout=40,
        )
        await mem.events.until(lambda m=mem: not m.events.of(ev.PeerStatus)[-1].active)
    history = _history(members, ops)
    result = check(history)
    assert result["valid"], result
    assert result["counts"]["acked"] == 10 and result["counts"]["lost"] == 0
    rows = {n: [r.txn for r in m.client.cache.messages(ROOM)] for n, m in members.items()}
    assert rows["alice"] == rows["bob"] == rows["carol"]
    # the operators' figure: clients that came back with peer-to-peer messages
    for _ in range(100):
        metrics = await asyncio.to_thread(_metrics, server)
        if "curvechat_peer_returns_total 3.0" in metrics:
            break
        await asyncio.sleep(0.1)
    assert "curvechat_peer_returns_total 3.0" in metrics
    # alice wrote 3 and took 6, bob and carol likewise
    assert "curvechat_peer_messages_total 27.0" in metrics


def _metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _op(client: str, txn: str, text: str, t0: float) -> dict[str, Any]:
    return {"client": client, "room": ROOM, "txn": txn, "text": text,
            "t_invoke": time.monotonic() - t0, "outcome": "pending"}  # fmt: skip


def _history(members: dict[str, Member], ops: list[dict[str, Any]]) -> dict[str, Any]:
    acks = {(name, e.txn): e for name, m in members.items() for e in m.events.of(ev.SendAcked)}
    for op in ops:
        ack = acks.get((op["client"], op["txn"]))
        if ack is not None:
            op.update(outcome="ok", seq=ack.seq, t_ack=0.0)
    receipts = [
        {"client": name, "room": e.message.room, "seq": e.message.seq, "sender": e.message.sender,
         "txn": e.message.txn, "text": e.message.text, "error": e.message.error, "t": 0.0,
         "live": e.live}
        for name, m in members.items() for e in m.events.of(ev.MessageReceived)
    ]  # fmt: skip
    final = {
        name: {ROOM: [[r.seq, r.sender, r.txn, r.text, r.error]
                      for r in m.client.cache.messages(ROOM, limit=1000)]}
        for name, m in members.items()
    }  # fmt: skip
    return {"rooms": {ROOM: list(members)}, "ops": ops, "receipts": receipts, "final": final}


async def test_a_non_member_is_refused_by_the_listener(
    trio: tuple[ServerProcess, dict[str, Member]], clients: ClientFactory
) -> None:
    server, members = trio
    alice = members["alice"].client
    assert alice.peer is not None and alice.peer.listener is not None
    mallory, _ = await clients.make("mallory", server.connect)
    record = p.decode_record(alice.peer.core.make_record(alice.peer.endpoints, 1).record)
    ctx = zmq.asyncio.Context()
    try:
        link = PeerLink(ctx, mallory.identity, record, timeout=1.0)
        with pytest.raises(PeerUnreachable):
            for _ in range(3):
                await link.ask(p.Digest(room=ROOM, have=[]))
                await asyncio.sleep(0.2)
        link.reset()
        assert alice.peer.listener.gate.refused >= 1
        # a stranger with a fresh key fares no better
        stranger = PeerLink(ctx, Identity.generate("stranger"), record, timeout=1.0)
        with pytest.raises(PeerUnreachable):
            await stranger.ask(p.Digest(room=ROOM, have=[]))
        stranger.reset()
    finally:
        ctx.term()


async def test_a_forged_envelope_relayed_by_a_member_is_refused(
    trio: tuple[ServerProcess, dict[str, Member]],
) -> None:
    _, members = trio
    alice, bob = members["alice"].client, members["bob"].client
    assert alice.peer is not None and alice.peer.listener is not None
    record = p.decode_record(alice.peer.core.make_record(alice.peer.endpoints, 1).record)
    held = bob.core.held(ROOM)
    epoch = max(held)
    forger = Identity.from_secrets("carol", bob.identity.sign_seed, bob.identity.transport_secret)
    forged = seal_message(
        forger, room=ROOM, epoch=epoch, key=held[epoch].key, txn="forged-0001",
        plaintext=Plaintext(text="carol never said this", ts=1),
    )  # fmt: skip
    ctx = zmq.asyncio.Context()
    try:
        link = PeerLink(ctx, bob.identity, record, timeout=2.0)
        reply = await _ask_when_linked(link, p.Offer(room=ROOM, envelopes=[forged]))
        assert isinstance(reply, p.OfferReply)
        assert reply.accepted == 0 and [(r.txn, r.code) for r in reply.refused] == [
            ("forged-0001", "bad_envelope")
        ]
        assert alice.provisional(ROOM) == []
        # a room bob is not in: not_shared, and nothing about it
        reply = await link.ask(p.Digest(room="elsewhere", have=[]))
        assert isinstance(reply, p.PeerError) and reply.code == "not_shared"
        # junk bytes: an error code, and the listener keeps serving
        sock = link._socket()
        await sock.send(b"\x82\xa1v\x01\xa3rid\x07")  # a frame with a rid and nothing else
        answer = p.decode_answer(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(answer.msg, p.PeerError) and answer.msg.code == "bad_frame"
        genuine = seal_message(
            bob.identity, room=ROOM, epoch=epoch, key=held[epoch].key, txn="genuine-0001",
            plaintext=Plaintext(text="bob did say this", ts=2),
        )  # fmt: skip
        reply = await link.ask(p.Offer(room=ROOM, envelopes=[genuine]))
        assert isinstance(reply, p.OfferReply) and reply.accepted == 1
        assert [i.text for i in alice.provisional(ROOM)] == ["bob did say this"]
        link.reset()
    finally:
        ctx.term()


async def test_a_member_announcing_anothers_key_does_not_take_its_connections(
    trio: tuple[ServerProcess, dict[str, Member]],
) -> None:
    """bob signs a record that announces carol's transport key as his (a
    record proves who signed it, not who holds the key). carol's requests
    name her, so alice still serves them as carol's; a request naming a
    member whose record does not announce the key, or naming no one, is
    refused."""
    _, members = trio
    alice, bob, carol = (members[n].client for n in ("alice", "bob", "carol"))
    assert alice.peer is not None and alice.peer.listener is not None
    thief = Identity.from_secrets("bob", bob.identity.sign_seed, carol.identity.transport_secret)
    claim = PeerCore(TrustCore(thief, bob.cache, lambda e: None)).make_record(
        ["tcp://127.0.0.1:9"], now_ms()
    )
    assert alice.peer.take_record(claim)
    record = p.decode_record(alice.peer.core.make_record(alice.peer.endpoints, 1).record)
    epoch = max(carol.core.held(ROOM))
    ctx = zmq.asyncio.Context()
    link = PeerLink(ctx, carol.identity, record, timeout=2.0)
    try:
        env = seal_message(
            carol.identity, room=ROOM, epoch=epoch, key=carol.core.held(ROOM)[epoch].key,
            txn="carol-0001", plaintext=Plaintext(text="from carol herself", ts=1),
        )  # fmt: skip
        reply = await _ask_when_linked(link, p.Offer(room=ROOM, envelopes=[env]))
        assert isinstance(reply, p.OfferReply) and reply.accepted == 1
        assert [(i.text, i.via) for i in alice.provisional(ROOM)] == [
            ("from carol herself", "carol")
        ]
        sock = link._socket()
        digest = p.Digest(room=ROOM, have=[])
        # naming a member whose record does not announce the key: refused
        other = p.PeerAsk(v=p.PEER_VERSION, rid=98, req=digest, user="alice")
        await sock.send(p.encode_peer(other))
        answer = p.decode_answer(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(answer.msg, p.PeerError) and answer.msg.code == "not_shared"
        # naming no one: not a request of this version
        unnamed = msgspec.msgpack.encode(
            {"v": p.PEER_VERSION, "rid": 99, "req": {"type": "digest", "room": ROOM, "have": []}}
        )
        await sock.send(unnamed)
        answer = p.decode_answer(await asyncio.wait_for(sock.recv(), 5))
        assert isinstance(answer.msg, p.PeerError) and answer.msg.code == "bad_frame"
    finally:
        link.reset()
        ctx.term()


async def test_a_dialer_is_not_fooled_by_a_record_announcing_another_members_key(
    trio: tuple[ServerProcess, dict[str, Member]],
) -> None:
    """bob's record announces alice's key and alice's endpoints: dialing
    "bob" reaches alice, who says who answers, and the link refuses it
    rather than booking alice's answers as bob's."""
    _, members = trio
    alice, bob, carol = (members[n].client for n in ("alice", "bob", "carol"))
    assert alice.peer is not None
    genuine = p.decode_record(alice.peer.core.make_record(alice.peer.endpoints, 1).record)
    thief = Identity.from_secrets("bob", bob.identity.sign_seed, alice.identity.transport_secret)
    forged = p.decode_record(
        PeerCore(TrustCore(thief, bob.cache, lambda e: None))
        .make_record(list(genuine.endpoints), now_ms())
        .record
    )
    ctx = zmq.asyncio.Context()
    links = [PeerLink(ctx, carol.identity, r, timeout=2.0) for r in (genuine, forged)]
    try:
        reply = await _ask_when_linked(links[0], p.Digest(room=ROOM, have=[]))
        assert isinstance(reply, p.DigestReply)  # alice, as alice
        with pytest.raises(PeerUnreachable, match="alice answered"):
            await links[1].ask(p.Digest(room=ROOM, have=[]))
    finally:
        for link in links:
            link.reset()
        ctx.term()


async def test_records_heard_under_many_names_do_not_push_out_known_members(
    trio: tuple[ServerProcess, dict[str, Member]],
) -> None:
    """Anyone on the LAN can send records under any number of names: the
    records of users we know are all kept (each listener) to be judged
    again, those of others only the newest MAX_HEARD."""
    _, members = trio
    alice, bob = members["alice"].client, members["bob"].client
    assert alice.peer is not None and bob.peer is not None
    alice.peer._heard(bob.peer.core.make_record(["tcp://127.0.0.1:9"], now_ms()))
    for i in range(MAX_HEARD + 50):
        junk = p.PeerRecord(user=f"x{i}", transport_pub=bytes(32), endpoints=[], ts=1)
        alice.peer._heard(m.SignedRecord(record=p.encode_record(junk), sig=bytes(64)))
    assert list(alice.peer.heard.known) == ["bob"]
    assert len(alice.peer.heard.strangers) == MAX_HEARD
    assert next(iter(alice.peer.heard.strangers)).user == "x50"  # the oldest went first


async def _ask_when_linked(link: PeerLink, req: p.AnyPeerRequest) -> p.AnyPeerReply:
    for _ in range(20):
        try:
            return await link.ask(req)
        except PeerUnreachable:
            await asyncio.sleep(0.1)
    return await link.ask(req)


async def test_a_client_started_while_the_server_is_down_finds_its_peers(
    trio: tuple[ServerProcess, dict[str, Member]], clients: ClientFactory
) -> None:
    """Records are kept in the cache: bob quits, the server dies, bob starts
    again and still reaches alice and carol."""
    server, members = trio
    await clients.close(members["bob"].client)
    server.kill()
    alice = members["alice"]
    await alice.events.until(lambda: alice.client.status.state is not ConnState.LIVE)
    bob, events = await clients.make(
        "bob", server.connect, ready=False, peers=options({"alice", "carol"})
    )
    await alice.client.send(ROOM, "are you there, bob?", wait=False)
    await events.until(
        lambda: [e.text for e in events.of(ev.PeerMessage)] == ["are you there, bob?"]
    )
    assert bob.status.state is not ConnState.LIVE


async def test_a_member_that_is_away_delays_no_other_in_a_round(
    tmp_path: Path, clients: ClientFactory
) -> None:
    """alice dials bob and carol in her rounds; bob is gone (his link waits
    out alice's 30 s timeout) and carol dials nobody: carol's message reaches
    alice through alice's own round, long before bob's wait ends."""
    server = ServerProcess(tmp_path / "node").start()
    slow = PeerOptions(bind="tcp://127.0.0.1:*", interval=0.2, timeout=30.0)
    members: dict[str, Member] = {}
    try:
        for name in ("alice", "bob", "carol"):
            opts = slow if name == "alice" else options(reach=set())
            client, events = await clients.make(name, server.connect, peers=opts)
            members[name] = Member(name, client, events)
        await members["alice"].client.create_room(ROOM, ["bob", "carol"])
        for mem in members.values():
            await mem.events.until(lambda c=mem.client: bool(c.core.held(ROOM)))
        for _ in range(2):
            for mem in members.values():
                assert mem.client.peer is not None
                await mem.client.peer.publish()
        alice = members["alice"]
        assert alice.client.peer is not None
        assert [r.user for r in alice.client.peer.core.peers()] == ["bob", "carol"]
        server.kill()
        await members["bob"].client.close()  # gone: nothing answers at his address
        await alice.events.until(lambda: alice.client.status.state is not ConnState.LIVE)
        await members["carol"].client.send(ROOM, "carol, offline", wait=False)
        await alice.events.until(lambda: "carol, offline" in provisional(alice), timeout=10)
    finally:
        server.kill()


async def test_a_second_client_of_a_member_that_quits_takes_no_one_off_peer_to_peer(
    tmp_path: Path, clients: ClientFactory
) -> None:
    """xavier runs two clients (two homes, one identity); the second, the
    last to announce, quits, then the server goes away. yves holds a record
    of each of xavier's listeners, dials both, reaches xavier through the
    first, and withdraws the record of the one that quit as dialing it keeps
    failing. (With one record per user, the newest, yves dialed only the
    one that quit, and stayed off peer-to-peer.)"""
    server = ServerProcess(tmp_path / "node").start()
    try:
        x1, _ = await clients.make("xavier", server.connect, peers=options())
        yves, y_events = await clients.make("yves", server.connect, peers=options())
        await x1.create_room(ROOM, ["yves"])
        await y_events.until(lambda: bool(yves.core.held(ROOM)))
        x2, x2_events = await clients.make(
            "xavier", server.connect, home_name="xavier-2", peers=options()
        )
        await x2_events.until(lambda: bool(x2.core.held(ROOM)))
        # yves looks xavier up before and after the second announces (the
        # directory holds the last one announced)
        for client in (x1, yves, x2, yves):
            assert client.peer is not None
            await client.peer.publish()
        assert yves.peer is not None
        dialed = {tuple(r.endpoints) for r in yves.peer.core.peers() if r.user == "xavier"}
        assert dialed == {tuple(c.peer.endpoints) for c in (x1, x2)}  # type: ignore[union-attr]
        await clients.close(x2)
        server.kill()
        await y_events.until(lambda: yves.status.state is not ConnState.LIVE)
        await y_events.until(lambda: yves.peer.reached == {"xavier"}, timeout=20)  # type: ignore[union-attr]
        await y_events.until(
            lambda: [r.endpoints for r in yves.peer.core.peers()] == [x1.peer.endpoints],  # type: ignore[union-attr]
            timeout=20,
        )
        assert [e.peers for e in y_events.of(ev.PeerStatus) if e.active][-1] == 1
    finally:
        server.kill()
