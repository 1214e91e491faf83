"""Routing ids a peer names (server/silent.py): libzmq's ROUTER gives a peer
that names none a zero byte and a counter, unchecked against the ids peers
named, and aborts on a duplicate. The counter's start is seeded, and a
connection that says nothing after its handshake is closed."""

from __future__ import annotations

import asyncio
import ctypes
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.utils.z85

from curvechat.crypto.identity import Identity
from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.server.node import ChatNode
from curvechat.server.silent import SILENT_S, Silent
from curvechat.store.sqlite import SQLiteStore
from curvechat.tcpfd import shut_down

from support.nodes import running_node
from support.raw import RawClient
from support.servers import ServerProcess


def _unseeded_starts(n: int) -> list[int]:
    """The first values libzmq's generate_random() gives in a process that
    never seeded rand(): (rand() | rand() << 31) mod 2^32 after srand(1)."""
    libc = ctypes.CDLL(None)
    libc.srand(1)
    return [(libc.rand() | (libc.rand() << 31)) & 0xFFFFFFFF for _ in range(n)]


def _dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], server_key: bytes, me: Identity | None = None
) -> zmq.Socket[bytes]:
    me = me or Identity.generate("mal")
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.curve_serverkey = server_key
    s.curve_publickey = zmq.utils.z85.encode(me.transport_pub)
    s.curve_secretkey = zmq.utils.z85.encode(me.transport_secret)
    return s


def test_ids_named_ahead_of_the_counter_do_not_abort_the_node(tmp_path: Path) -> None:
    """144 keys name the ids an unseeded libzmq hands out first; a peer
    that names none then connects. The node used to abort (SIGABRT:
    `Assertion failed: ok (src/socket_base.cpp)`)."""
    server = ServerProcess(tmp_path / "node").start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    claims = []
    try:
        addr = parse_connect(server.connect)[0]
        for base in _unseeded_starts(12):
            for k in range(12):
                s = _dealer(ctx, addr.server_key.encode())
                s.setsockopt(zmq.ROUTING_ID, b"\x00" + ((base + k) & 0xFFFFFFFF).to_bytes(4, "big"))
                s.connect(addr.endpoint)
                s.send(encode_request(1, m.Ping(t=0)))
                claims.append(s)
        assert all(s.poll(5000) and decode_server_frame(s.recv()) for s in claims)
        bob = RawClient(ctx, server.connect, Identity.generate("bob"))  # names no id
        try:
            assert isinstance(bob.request(m.Ping(t=0)), m.Pong)
        finally:
            bob.close()
        assert server.proc is not None and server.proc.poll() is None, server.log()[-2000:]
    finally:
        for s in claims:
            s.close()
        ctx.term()
        server.stop()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ChatNode]:
    async with running_node(SQLiteStore(tmp_path / "store.db")) as chat:
        yield chat


async def _closed(sock: zmq.asyncio.Socket) -> None:
    async with asyncio.timeout(10):
        while (await sock.recv_multipart())[0][:2] != zmq.EVENT_DISCONNECTED.to_bytes(2, "little"):
            pass


async def test_a_connection_that_is_no_users_is_closed(node: ChatNode) -> None:
    """A peer that completes its handshake and sends nothing, or only pings
    (each would hold a descriptor for good), is shut down once SILENT_S
    have passed since it was accepted without it becoming a user's; one
    that registered is not."""
    assert node.endpoint is not None
    ctx = zmq.asyncio.Context()
    try:
        silent = _dealer(ctx, node.public_key)
        pinger = _dealer(ctx, node.public_key)
        alice = Identity.generate("alice")
        user = _dealer(ctx, node.public_key, alice)
        watched = [
            s.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            for s in (silent, pinger)
        ]
        for sock in (silent, pinger, user):
            sock.connect(node.endpoint)
        await pinger.send(encode_request(1, m.Ping(t=0)))
        assert isinstance(decode_server_frame(await pinger.recv()).msg, m.Pong)
        register = m.Register(
            user="alice", sign_pub=alice.sign_pub, transport_sig=alice.transport_sig()
        )
        await user.send(encode_request(1, register))
        assert isinstance(decode_server_frame(await user.recv()).msg, m.Registered)
        async with asyncio.timeout(10):
            while len(node.liveness.silent) < 3:
                await asyncio.sleep(0.02)
        assert node.liveness.close_silent(time.monotonic()) == 0  # not yet
        assert node.liveness.close_silent(time.monotonic() + SILENT_S + 1) == 2
        for events in watched:
            await _closed(events)
        await user.send(encode_request(2, m.Ping(t=0)))  # still served
        assert isinstance(decode_server_frame(await user.recv()).msg, m.Pong)
        for sock in (*watched, silent, pinger, user):
            sock.close()
    finally:
        ctx.destroy(linger=0)


async def _ask(sock: zmq.asyncio.Socket, rid: int, req: m.AnyRequest) -> m.AnyReply:
    await sock.send(encode_request(rid, req))
    while True:
        frame = decode_server_frame(await sock.recv())
        if frame.rid == rid:
            return frame.msg


async def test_connections_of_a_user_that_said_bye_or_were_refused_are_shut(
    node: ChatNode,
) -> None:
    """One account held any number of connections: each said `hello` and
    `bye` (gone: not counted against the user's limit) and stayed open, and
    the reaper forgot its session without closing it. Now a session dropped
    while its connection is open has it shut down, and a connection whose
    `hello` the user's limit refused is shut SILENT_S later, as one that is
    no user's."""
    assert node.endpoint is not None
    node.max_connections_per_user = 1
    alice = Identity.generate("alice")
    ctx = zmq.asyncio.Context()
    try:
        first, second, third = (_dealer(ctx, node.public_key, alice) for _ in range(3))
        watched = [s.get_monitor_socket(zmq.EVENT_DISCONNECTED) for s in (first, second, third)]
        for sock in (first, second, third):
            sock.connect(node.endpoint)
        register = m.Register(
            user="alice", sign_pub=alice.sign_pub, transport_sig=alice.transport_sig()
        )
        assert isinstance(await _ask(first, 1, register), m.Registered)
        assert isinstance(await _ask(first, 2, m.Bye()), m.ByeAck)
        assert isinstance(await _ask(second, 1, m.Hello()), m.Welcome)  # the one slot
        refused = await _ask(third, 1, m.Hello())
        assert isinstance(refused, m.Error) and refused.code == "too_many_connections"
        await node.liveness.reap(time.monotonic() - 1000)
        await _closed(watched[0])  # said bye, stayed open: shut when its session went
        assert node.liveness.close_silent(time.monotonic() + SILENT_S + 1) == 1
        await _closed(watched[2])  # refused: no user's
        assert isinstance(await _ask(second, 2, m.Ping(t=0)), m.Pong)  # still served
        for sock in (*watched, first, second, third):
            sock.close()
    finally:
        ctx.destroy(linger=0)


def test_only_a_connection_accepted_on_the_port_is_shut_down() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    other = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(other.getsockname())
    accepted, _ = other.accept()
    try:
        port = listener.getsockname()[1]
        assert not shut_down(accepted.fileno(), port)  # accepted on another port
        assert not shut_down(10**6, port)  # no such fd
        accepted.sendall(b"x")
        assert client.recv(1) == b"x"
        assert shut_down(accepted.fileno(), other.getsockname()[1])
        assert client.recv(1) == b""  # the peer sees the connection end
    finally:
        for s in (listener, other, client, accepted):
            s.close()


def test_the_books_of_silent_connections() -> None:
    silent = Silent(limit_s=10)
    silent.accepted(7, 100.0)
    silent.accepted(8, 100.0)
    silent.accepted(9, 105.0)
    silent.closed(9)
    assert silent.overdue({8: object()}, 105.0) == []  # 8 spoke: forgotten
    assert silent.overdue({}, 111.0) == [7]
    assert len(silent) == 0
