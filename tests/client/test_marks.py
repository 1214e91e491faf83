"""Flow-control marks (client/connection.py): the client echoes the newest
mark in a ping, one ping at a time, however many marks a node sends. Played
by a bare ROUTER with CURVE that welcomes, then floods marks and answers no
ping."""

from __future__ import annotations

import asyncio

import msgspec
import zmq
import zmq.asyncio
import zmq.utils.z85

from curvechat.protocol import PROTOCOL_VERSION, encode_reply
from curvechat.protocol import messages as m

from support.bare import bare_router, connection_to

MARKS = 2000


async def test_a_flood_of_marks_is_echoed_by_one_ping_at_a_time() -> None:
    ctx = zmq.asyncio.Context()
    sock, port, public = bare_router(ctx)
    pings: list[int] = []  # the read_mark of each ping

    async def node() -> None:
        while True:
            ident, data = await sock.recv_multipart()
            req = msgspec.msgpack.decode(data)
            if req["req"]["type"] == "hello":
                welcome = m.Welcome(node="n", boot="b", user=None, time=1, version=PROTOCOL_VERSION)
                await sock.send_multipart([ident, encode_reply(req["rid"], welcome)])
                await asyncio.sleep(0.5)  # the client is live by then
                for mark in range(1, MARKS + 1):  # and never a pong
                    await sock.send_multipart([ident, encode_reply(0, m.Mark(mark=mark))])
            elif req["req"]["type"] == "ping":
                pings.append(int(req["req"].get("read_mark") or 0))

    served = asyncio.create_task(node())
    conn = connection_to(port, public)
    try:
        await conn.start()
        async with asyncio.timeout(20):
            while not pings:
                await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # every mark has come by now
        # One ping is on its way, unanswered; the marks that came meanwhile
        # wait for it rather than each starting a ping (and a task) of its own.
        assert len(pings) == 1, pings[:10]
        assert len(conn._bg) <= 2, len(conn._bg)
    finally:
        await conn.close(goodbye=False)
        served.cancel()
        sock.close(0)
        ctx.term()
