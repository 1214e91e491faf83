"""The dialer's link to one listener (client/peer/link.py), against a real
CURVE ROUTER on loopback playing a hostile member's listener."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq
import zmq.asyncio
import zmq.utils.z85

from curvechat.client.errors import PeerUnreachable
from curvechat.client.peer.link import PeerLink
from curvechat.crypto.identity import Identity
from curvechat.protocol import peer as p


def _bobs_listener_and_a_link(ctx: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, PeerLink]:
    """A CURVE ROUTER holding bob's key (his listener, as a hostile member
    would write it), and alice's link to it."""
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.curve_server = True
    router.curve_secretkey = zmq.utils.z85.encode(bob.transport_secret)
    router.curve_publickey = zmq.utils.z85.encode(bob.transport_pub)
    router.bind("tcp://127.0.0.1:*")
    record = p.PeerRecord(
        user="bob",
        transport_pub=bob.transport_pub,
        endpoints=[router.getsockopt_string(zmq.LAST_ENDPOINT)],
        ts=1,
    )
    return router, PeerLink(ctx, alice, record, timeout=5.0)


async def test_an_answer_to_a_request_not_asked_fails_the_request_at_once() -> None:
    """One request at a time on a socket made anew after each failure: an
    answer with another request id is never honest. The link fails at the
    first one instead of decoding a listener's flood until the deadline,
    and a later honest answer on the same socket is not taken."""
    ctx = zmq.asyncio.Context()
    router, link = _bobs_listener_and_a_link(ctx)
    try:
        asking = asyncio.create_task(link.ask(p.Digest(room="r", have=[])))
        ident, data = await router.recv_multipart()
        ask = p.decode_ask(data)
        reply = p.DigestReply(room="r", envelopes=[], want=[])
        for rid in (ask.rid + 1000, ask.rid):  # a stray answer, then the right one
            answer = p.PeerAnswer(v=p.PEER_VERSION, rid=rid, msg=reply, user="bob")
            await router.send_multipart([ident, p.encode_peer(answer)])
        t0 = time.monotonic()
        with pytest.raises(PeerUnreachable, match="not asked"):
            await asking
        assert time.monotonic() - t0 < 2.0  # not the 5 s deadline
    finally:
        link.reset()
        router.close(0)
        ctx.term()


async def test_a_frame_between_requests_closes_the_link_at_once() -> None:
    """The socket takes every frame in (curvechat/heartbeats.py), so what a
    listener sends between requests would stay in memory: a frame then
    answers nothing, and the link closes the socket, dropping it and what
    came with it. The next request dials afresh."""
    ctx = zmq.asyncio.Context()
    router, link = _bobs_listener_and_a_link(ctx)
    reply = p.DigestReply(room="r", envelopes=[], want=[])
    try:
        for round_ in range(2):
            asking = asyncio.create_task(link.ask(p.Digest(room="r", have=[])))
            ident, data = await router.recv_multipart()
            answer = p.PeerAnswer(
                v=p.PEER_VERSION, rid=p.decode_ask(data).rid, msg=reply, user="bob"
            )
            await router.send_multipart([ident, p.encode_peer(answer)])
            assert await asyncio.wait_for(asking, 5) == reply
            sock = link._sock
            assert sock is not None and sock.rcvhwm == 0
            if round_ == 0:
                for _ in range(100):  # asked nothing
                    await router.send_multipart([ident, b"x" * 1000])
                for _ in range(200):
                    if link._sock is None:
                        break
                    await asyncio.sleep(0.01)
                assert link._sock is None and sock.closed
    finally:
        link.reset()
        router.close(0)
        ctx.term()
