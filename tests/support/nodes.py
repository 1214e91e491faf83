"""A chat node in the test's own process, on loopback, over a given store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import zmq

from curvechat.server.node import ChatNode
from curvechat.store import Store


@contextlib.asynccontextmanager
async def running_node(store: Store) -> AsyncIterator[ChatNode]:
    """`store` opened and a node started on it (a port of its own); both
    stopped and closed after."""
    await store.open()
    public, secret = zmq.curve_keypair()
    node = ChatNode(store, public_key=public, secret_key=secret, bind="tcp://127.0.0.1:0")
    try:
        await node.start()
        yield node
    finally:
        await node.stop()
        await store.close()
