"""A child process for tests/client/test_inflow.py: a node that does not
keep to flow control. A bare CURVE ROUTER that welcomes each connection,
then sends it small pushes (`push_room`, 58 bytes) as fast as it can, with
no `push_mark` among them, until the connection is gone; then waits for
the next. It prints its port and public key on one line, and when it is
done (after SECONDS, or once it has sent FRAMES) the number of
connections and of frames it sent.

    python -m support.flooder SECONDS FRAMES
"""

from __future__ import annotations

import sys
import time

import msgspec
import zmq

from curvechat.protocol import PROTOCOL_VERSION, encode_reply
from curvechat.protocol import messages as m


def main() -> None:
    seconds, frames = float(sys.argv[1]), int(sys.argv[2])
    ctx = zmq.Context()
    public, secret = zmq.curve_keypair()
    sock = ctx.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.linger = 0
    sock.sndhwm = 0  # never dropped here: what the client does not read, its libzmq holds
    sock.router_mandatory = True  # a send to a connection that is gone fails
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(port, public.decode(), flush=True)
    push = encode_reply(0, m.RoomPush(room="r" * 8, reason="members"))
    welcome = m.Welcome(node="n", boot="b", user=None, time=1, version=PROTOCOL_VERSION)
    end = time.monotonic() + seconds
    connections = sent = 0
    target = None  # the connection flooded now
    while time.monotonic() < end and sent < frames:
        while sock.poll(0 if target else 100):  # pings: not answered
            ident, data = sock.recv_multipart()
            req = msgspec.msgpack.decode(data)
            if req["req"]["type"] == "hello":  # a new connection: flood that one
                connections += 1
                sock.send_multipart([ident, encode_reply(req["rid"], welcome)])
                target = ident
        if target is None:
            continue
        try:
            for _ in range(500):
                sock.send_multipart([target, push])
                sent += 1
        except zmq.ZMQError:  # EHOSTUNREACH: the client cut it
            target = None
    print(connections, sent, flush=True)


if __name__ == "__main__":
    main()
