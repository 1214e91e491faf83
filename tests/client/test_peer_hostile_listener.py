"""A hostile member against peer-to-peer mode: bob answers alice's rounds
from a listener of his own making (his genuine transport key, a record he
signed), with a real server that is then killed and a real ChatClient for
alice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.utils.z85

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient
from curvechat.client.peer.shell import PeerOptions, now_ms
from curvechat.client.state import ConnState
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.protocol import peer as p

from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess

ROOM = "r"
OPTS = PeerOptions(bind="tcp://127.0.0.1:*", interval=0.2, timeout=1.0)

Answer = Callable[[p.AnyPeerRequest], p.AnyPeerReply]


class HostileListener:
    """A ROUTER holding bob's transport key that answers as bob."""

    def __init__(self, bob: Identity, answer: Answer) -> None:
        self.bob, self.answer = bob, answer
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.curve_server = True
        self.sock.curve_secretkey = zmq.utils.z85.encode(bob.transport_secret)
        self.sock.curve_publickey = zmq.utils.z85.encode(bob.transport_pub)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.asked = 0
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            ident, data = await self.sock.recv_multipart()
            ask = p.decode_ask(data)
            self.asked += 1
            reply = p.PeerAnswer(
                v=p.PEER_VERSION, rid=ask.rid, msg=self.answer(ask.req), user="bob"
            )
            await self.sock.send_multipart([ident, p.encode_peer(reply)])

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
async def pair(
    tmp_path: Path, clients: ClientFactory
) -> AsyncIterator[tuple[ServerProcess, ChatClient, Recorder, ChatClient]]:
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, events = await clients.make("alice", server.connect, peers=OPTS)
        bob, _ = await clients.make("bob", server.connect, peers=PeerOptions(listen=False))
        await alice.create_room(ROOM, ["bob"])
        await events.until(lambda: bool(alice.core.held(ROOM)))
        for _ in range(100):
            if bob.core.held(ROOM):
                break
            await asyncio.sleep(0.05)
        yield server, alice, events, bob
    finally:
        server.kill()


async def _bob_listens_at(alice: ChatClient, bob: ChatClient, endpoint: str) -> None:
    assert alice.peer is not None and bob.peer is not None
    assert alice.peer.take_record(bob.peer.core.make_record([endpoint], now_ms()))


async def test_a_member_relaying_junk_every_round_is_told_once(
    pair: tuple[ServerProcess, ChatClient, Recorder, ChatClient],
) -> None:
    """bob answers every digest with 64 envelopes naming another room (N4
    refuses them before any signature check), five rounds a second here:
    alice is told once, with the count and the reason, not once for each
    envelope of each round (640 warnings in 2 s before, each a line on the
    terminal client's screen)."""
    server, alice, events, bob = pair
    junk = seal_message(
        bob.identity, room="elsewhere", epoch=0, key=bytes(32), txn="junk-00000001",
        plaintext=Plaintext(text="x", ts=1),
    )  # fmt: skip

    def answer(req: p.AnyPeerRequest) -> p.AnyPeerReply:
        if isinstance(req, p.Digest):
            return p.DigestReply(room=req.room, envelopes=[junk] * 64, want=[])
        return p.OfferReply(room=req.room, accepted=0, refused=[])

    hostile = HostileListener(bob.identity, answer)
    try:
        await _bob_listens_at(alice, bob, hostile.endpoint)
        server.kill()
        await events.until(lambda: alice.status.state is not ConnState.LIVE)
        await events.until(lambda: hostile.asked >= 5, 20)
        await asyncio.sleep(0.5)
    finally:
        await hostile.close()
    told = [e.message for e in events.of(ev.Problem) if "we refused" in e.message]
    assert told == ["bob relayed 64 messages we refused (bad_envelope)"], told
