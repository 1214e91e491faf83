"""A bare ROUTER with CURVE standing in for a node, and a client
`Connection` to it: for tests that play a node's side frame by frame."""

from __future__ import annotations

import zmq
import zmq.asyncio
import zmq.utils.z85

from curvechat.client.connection import Connection
from curvechat.crypto import Identity
from curvechat.protocol.connect import ServerAddress


def bare_router(ctx: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, int, bytes]:
    """A CURVE ROUTER on a random loopback port: (socket, port, public key)."""
    public, secret = zmq.curve_keypair()
    sock = ctx.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, port, public


def connection_to(port: int, public: bytes, user: str = "alice") -> Connection:
    """A client connection (not started) to the bare router on `port`."""
    ident = Identity.generate(user)
    return Connection(
        [ServerAddress(f"tcp://127.0.0.1:{port}", public.decode())],
        public_key=zmq.utils.z85.encode(ident.transport_pub),
        secret_key=zmq.utils.z85.encode(ident.transport_secret),
        on_push=lambda msg: None,
        on_status=lambda st: None,
    )
