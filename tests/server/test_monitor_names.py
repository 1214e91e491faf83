"""A monitor's inproc name is its own (`server/router.py` `open_monitor`):
named after the socket's id, a monitor opened again on the same socket, or
on a socket made where a closed one was, found the old name still bound in
libzmq ("Address already in use"), and the node link or the test's node
socket could not be made."""

from __future__ import annotations

import zmq
import zmq.asyncio

from curvechat.server.router import open_monitor


def test_a_monitor_opened_again_gets_a_name_of_its_own() -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        for _ in range(50):
            monitor = open_monitor(ctx, sock, zmq.EVENT_ACCEPTED)
            sock.disable_monitor()
            monitor.close(0)
    finally:
        sock.close(0)
        ctx.term()
