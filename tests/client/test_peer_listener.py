"""The peer listener against a member who floods it (real CURVE sockets, no
server): frames already queued do not keep the event loop, a connection
that does not wait for its answers is cut, a message of
several parts is paid for like a request, and a large frame is paced before
anything of it is read."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import zmq
import zmq.asyncio
import zmq.utils.monitor
import zmq.utils.z85

from curvechat.client.peer.intake import PENDING
from curvechat.client.peer.listener import PeerListener
from curvechat.crypto.identity import Identity
from curvechat.protocol import peer as p


async def _listener(paced: list[bytes], allow: int) -> tuple[PeerListener, Identity]:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")

    def pace(key: bytes) -> str | None:
        paced.append(key)
        return None if len(paced) <= allow else "rate_limited"

    async def handler(user: str, req: p.AnyPeerRequest) -> p.AnyPeerReply:
        raise AssertionError("nothing here is a request to serve")

    listener = PeerListener(
        alice, lambda key: key == bob.transport_pub, pace, lambda k, u: "bob", handler
    )
    await listener.start()
    return listener, bob


def _dealer(ctx: zmq.asyncio.Context, listener: PeerListener, bob: Identity) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey = zmq.utils.z85.encode(listener.identity.transport_pub)
    sock.curve_publickey = zmq.utils.z85.encode(bob.transport_pub)
    sock.curve_secretkey = zmq.utils.z85.encode(bob.transport_secret)
    sock.connect(listener.endpoint)
    return sock


async def _until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2_000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_flood_of_queued_frames_does_not_keep_the_loop_and_is_cut() -> None:
    """Between two frames it answers the loop runs its other tasks (the
    engine, the screen, the handshakes): the listener used to serve every
    queued frame before anything else ran. A connection that sends without
    waiting for its answers has `PENDING` of them taken, the next
    `CUT_AFTER` refused unread, and is then shut down: the socket takes
    every frame in (curvechat/heartbeats.py), so this is what bounds what a
    member makes us hold."""
    paced: list[bytes] = []
    listener, bob = await _listener(paced, allow=10**9)
    ctx = zmq.asyncio.Context()
    sock = _dealer(ctx, listener, bob)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        junk = msgspec.msgpack.encode({"rid": 7, "what": [[[1]] * 50] * 20})
        await sock.send(junk)  # the handshake first
        await _until(lambda: listener.bad_frames >= 1, "the first frame")
        seen: list[int] = []

        async def ticker() -> None:
            while True:
                seen.append(listener.bad_frames)
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        for _ in range(400):
            await sock.send(junk, copy=True)
        await _until(lambda: listener.intake.cuts == 1, "the connection cut")
        await _until(lambda: listener.bad_frames >= 1 + PENDING, "what was taken answered")
        tick.cancel()
        # Each frame answered frees a place for the next: a few more than
        # PENDING may be taken before the refusals in a row cut it, not 400.
        assert 1 + PENDING <= listener.bad_frames < 1 + 4 * PENDING
        assert max(b - a for a, b in itertools.pairwise(seen)) == 1  # one a turn
        event = await asyncio.wait_for(monitor.recv_multipart(), 10)
        assert zmq.utils.monitor.parse_monitor_message(event)["event"] == (zmq.EVENT_DISCONNECTED)
    finally:
        monitor.close(0)
        sock.close(0)
        ctx.term()
        await listener.close()


async def test_messages_of_several_parts_are_paced_and_a_large_frame_is_not_peeked() -> None:
    paced: list[bytes] = []
    listener, bob = await _listener(paced, allow=3)
    ctx = zmq.asyncio.Context()
    sock = _dealer(ctx, listener, bob)
    try:
        for _ in range(5):
            await sock.send_multipart([b"a", b"b", b"c"])
        await _until(lambda: listener.bad_frames >= 5, "five messages of three parts")
        assert paced[-5:] == [bob.transport_pub] * 5  # paid for, by bob's key
        # over the pace: a small frame is refused with its rid, a large one unanswered
        small = msgspec.msgpack.encode({"v": p.PEER_VERSION, "rid": 41})
        large = msgspec.msgpack.encode({"v": p.PEER_VERSION, "rid": 42, "pad": "x" * 100_000})
        await sock.send(large)
        await sock.send(small)
        answer = p.decode_answer(await asyncio.wait_for(sock.recv(), 10))
        assert answer.rid == 41 and isinstance(answer.msg, p.PeerError)
        assert not await sock.poll(300)  # nothing for the large one
    finally:
        sock.close(0)
        ctx.term()
        await listener.close()
