"""A raw protocol client (plain blocking pyzmq, CURVE on) for tests that act
as a hostile user: it sends exactly the frames a test asks for, reads replies
only when told to, and never does what a real client would do on its own."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import zmq

from curvechat.crypto import (
    MemberState,
    Plaintext,
    new_epoch_key,
    seal_message,
    sign_op,
    wrap_epoch_key,
)
from curvechat.crypto.identity import Identity
from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect


class RawClient:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        connect: str,
        identity: Identity,
        *,
        hoard: bool = True,
    ) -> None:
        """With `hoard=False` the socket buffers almost nothing it has not
        read (as a hostile client would set it): what it does not read stays
        queued on the node."""
        addr = parse_connect(connect)[0]
        self.identity = identity
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.ipv6 = True  # as the client's (client/dealer.py)
        if not hoard:
            self.sock.rcvhwm = 1
            self.sock.setsockopt(zmq.RCVBUF, 4096)
        self.sock.curve_serverkey = addr.server_key.encode()
        self.sock.curve_publickey = zmq.utils.z85.encode(identity.transport_pub)
        self.sock.curve_secretkey = zmq.utils.z85.encode(identity.transport_secret)
        self.sock.connect(addr.endpoint)
        self._rid = 0

    def send(self, req: m.AnyRequest) -> int:
        self._rid += 1
        self.sock.send(encode_request(self._rid, req))
        return self._rid

    def recv(self, timeout: float = 10.0) -> m.AnyReply:
        """The next reply to a request (pushes are skipped; a flow-control
        mark is confirmed with a ping, whose pong is a reply like any other)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise TimeoutError("no reply")
            frame = decode_server_frame(self.sock.recv())
            if frame.rid != 0:
                return frame.msg
            if isinstance(frame.msg, m.Mark):  # as every client does: confirm reading
                self.send(m.Ping(t=0, read_mark=frame.msg.mark))

    def request(self, req: m.AnyRequest, timeout: float = 10.0) -> m.AnyReply:
        self.send(req)
        return self.recv(timeout)

    def register(self) -> None:
        reply = self.request(
            m.Register(
                user=self.identity.user,
                sign_pub=self.identity.sign_pub,
                transport_sig=self.identity.transport_sig(),
            )
        )
        assert isinstance(reply, m.Registered), reply

    def drain(self) -> int:
        """Read whatever has arrived, without waiting; how many frames."""
        count = 0
        while self.sock.poll(0):
            self.sock.recv()
            count += 1
        return count

    def close(self) -> None:
        self.sock.close(linger=0)


_txns = itertools.count()


class Room:
    """A room made by `creator` with `members`: its signed ops, its first
    epoch key, the `create_room` request, and sends sealed under that key."""

    def __init__(self, creator: Identity, name: str, members: Sequence[Identity]) -> None:
        state = MemberState.empty(name)
        ops = []
        for who in (creator, *members):
            kind = "create" if who is creator else "add"
            signed = sign_op(
                creator,
                state.next_op(kind, creator.user, who.user, who.sign_pub, int(time.time() * 1000)),
            )
            state, _ = state.apply(signed)
            ops.append(signed)
        self.key = new_epoch_key(name, 0, state.index)
        packets = [
            wrap_epoch_key(creator, self.key, u, mem.key) for u, mem in state.members.items()
        ]
        upload = m.EpochUpload(epoch=0, after_op=state.index, packets=packets)
        self.name = name
        self.state = state
        self.create = m.CreateRoom(room=name, ops=ops, epoch=upload)

    def send(self, sender: Identity, text: str = "hi") -> m.Send:
        env = seal_message(
            sender,
            room=self.name,
            epoch=0,
            key=self.key.key,
            txn=f"txn-{next(_txns):08d}",
            plaintext=Plaintext(text=text, ts=int(time.time() * 1000)),
        )
        return m.Send(envelope=env)
