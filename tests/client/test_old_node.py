"""A node older than `sends` requests, or than `batch` frames, refuses a
hello that asks for them (an unknown field is `bad_frame`): the client says
hello again without the newest field, then without the next, and connects.
Played by a bare ROUTER with CURVE that decodes hellos strictly as the old
node did."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
import pytest
import zmq
import zmq.asyncio
import zmq.utils.z85
from msgspec import Meta

from curvechat.client.errors import ServerRefused
from curvechat.client.hello import RETRY_NEWER_S, Greeting
from curvechat.protocol import PROTOCOL_VERSION, encode_reply
from curvechat.protocol import messages as m

from support.bare import bare_router, connection_to


class _HelloBeforeBatch(msgspec.Struct, tag_field="type", tag="hello", forbid_unknown_fields=True):
    client: Annotated[str, Meta(max_length=64)] = ""


class _HelloBeforeSends(msgspec.Struct, tag_field="type", tag="hello", forbid_unknown_fields=True):
    client: Annotated[str, Meta(max_length=64)] = ""
    batch: bool = False


class _FrameBeforeBatch(msgspec.Struct):
    v: int
    rid: int
    req: _HelloBeforeBatch


class _FrameBeforeSends(msgspec.Struct):
    v: int
    rid: int
    req: _HelloBeforeSends


async def _old_node(
    sock: zmq.asyncio.Socket, frame_type: type, hellos: list[dict[str, object]]
) -> None:
    while True:
        ident, data = await sock.recv_multipart()
        raw = msgspec.msgpack.decode(data)
        hellos.append(raw["req"])
        try:
            frame = msgspec.msgpack.decode(data, type=frame_type)
        except msgspec.ValidationError as exc:
            reply = encode_reply(raw["rid"], m.Error(code="bad_frame", message=str(exc)[:500]))
        else:
            welcome = m.Welcome(node="old", boot="b", user=None, time=1, version=PROTOCOL_VERSION)
            reply = encode_reply(frame.rid, welcome)
        await sock.send_multipart([ident, reply])


@pytest.mark.parametrize(
    ("frame_type", "asked"),
    [
        (_FrameBeforeBatch, [(True, True), (True, None), (None, None)]),
        (_FrameBeforeSends, [(True, True), (True, None)]),
    ],
    ids=["before-batch", "before-sends"],
)
async def test_an_older_node_still_takes_the_client(
    frame_type: type, asked: list[tuple[object, object]]
) -> None:
    ctx = zmq.asyncio.Context()
    sock, port, public = bare_router(ctx)
    hellos: list[dict[str, object]] = []
    node = asyncio.create_task(_old_node(sock, frame_type, hellos))
    conn = connection_to(port, public)
    try:
        await conn.start()
        async with asyncio.timeout(20):
            while not conn.live:
                await asyncio.sleep(0.02)
        assert [(h.get("batch"), h.get("sends")) for h in hellos] == asked
    finally:
        await conn.close(goodbye=False)
        node.cancel()
        sock.close(0)
        ctx.term()


async def test_an_older_node_is_asked_the_newest_hello_again_after_a_while() -> None:
    """Its endpoint may be served by an upgraded node after a rolling upgrade:
    the older hello lasts RETRY_NEWER_S, then the newest is tried again."""
    greeting = Greeting("t")
    asked: list[tuple[object, object]] = []
    takes_sends = False

    async def ask(hello: m.Hello) -> m.AnyReply:
        asked.append((hello.batch, hello.sends))
        if hello.sends and not takes_sends:
            raise ServerRefused("bad_frame", "unknown field `sends`")
        return m.Welcome(node="n", boot="b", user=None, time=1, version=PROTOCOL_VERSION)

    await greeting.greet("tcp://a", ask, now=0.0)
    assert asked == [(True, True), (True, False)]
    await greeting.greet("tcp://a", ask, now=RETRY_NEWER_S - 1)  # the older one at once
    await greeting.greet("tcp://b", ask, now=RETRY_NEWER_S - 1)  # another node: the newest
    assert asked[2:] == [(True, False), (True, True), (True, False)]
    takes_sends = True  # upgraded
    await greeting.greet("tcp://a", ask, now=RETRY_NEWER_S + 1)
    assert asked[5:] == [(True, True)]
    await greeting.greet("tcp://a", ask, now=RETRY_NEWER_S + 2)
    assert asked[6:] == [(True, True)]
