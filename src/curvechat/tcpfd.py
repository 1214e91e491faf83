"""The TCP connection under a libzmq connection, for shutting it down.

What it is for: libzmq gives no way to close one connection of a ROUTER.
What it does give is the file descriptor a frame came in on (`source_fd`)
and the monitor's events; shutting that TCP socket down (`shut_down`) makes
libzmq close the connection as if the peer had. The node closes connections
that are no user's or that outlived their user (server/liveness.py) and
ones on its link that are no node's (server/nodelink.py); the peer listener
closes a member's connection that floods it (client/peer/listener.py).

This module must never close a descriptor libzmq holds, nor shut down one
that is not a TCP connection accepted on the port the caller names: a
descriptor a monitor named may have been closed and reused since.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import zmq


def source_fd(frame: zmq.Frame) -> int:
    """The socket a received frame came in on (-1 if libzmq cannot say)."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, ValueError, TypeError):
        return -1


@contextlib.contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket | None]:
    """A socket object on a duplicate of `fd` (None if it is closed), closed
    after: libzmq keeps its own."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        yield None
        return
    try:
        yield sock
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def peer_of(fd: int) -> object:
    """The remote address of the TCP connection `fd` (None if it has none)."""
    with _borrowed(fd) as sock:
        try:
            return None if sock is None else sock.getpeername()
        except OSError:
            return None


def shut_down(fd: int, port: int, peer: object = None) -> bool:
    """Shut down the TCP connection `fd` if it is one accepted on local
    `port` (and from `peer`, if given): an fd the monitor named may have
    been closed and reused since, and anything else is left alone; whether
    it was."""
    with _borrowed(fd) as sock:
        if sock is None:
            return False
        try:
            if sock.type != socket.SOCK_STREAM or sock.getsockname()[1] != port:
                return False
            if peer is not None and sock.getpeername() != peer:
                return False
            sock.shutdown(socket.SHUT_RDWR)
            return True
        except (OSError, IndexError, TypeError):
            return False
