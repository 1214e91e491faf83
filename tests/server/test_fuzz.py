"""Throw at least 10,000 random and mutated frames at a live server over a
real CURVE connection; every one gets an error reply with a code (or, for the
few valid ones, a normal reply), and afterwards the server still serves a
normal client."""

from __future__ import annotations

import os

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvechat.protocol import decode_server_frame, encode, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.protocol.limits import MAX_FRAME_BYTES

from support.servers import ServerProcess

VALID = [
    encode_request(7, m.Ping(t=1)),
    encode_request(8, m.Hello(client="fuzz")),
    encode_request(9, m.History(room="general", after=3)),
    encode_request(10, m.Sync(cursors={"a": 1, "@a:b": 2})),
    encode_request(11, m.Lookup(users=["alice", "bob"])),
]
CODES = {
    "bad_frame",
    "bad_version",
    "too_large",
    "not_registered",
    "no_such_room",
    "not_member",
    "rate_limited",
}

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[pos:]
    return bytes(data)


frames = st.one_of(
    st.binary(max_size=300),
    mutated(),
    msgpack_values.map(encode),
    st.fixed_dictionaries(
        {"v": st.integers(-2, 3), "rid": st.integers(-5, 2**54), "req": msgpack_values}
    ).map(encode),
    st.fixed_dictionaries(
        {
            "v": st.just(1),
            "rid": st.integers(1, 100),
            "req": st.fixed_dictionaries(
                {
                    "type": st.sampled_from(
                        ["send", "history", "sync", "register", "create_room", "members", "nope"]
                    )
                },
                optional={
                    "room": msgpack_values,
                    "after": msgpack_values,
                    "envelope": msgpack_values,
                    "cursors": msgpack_values,
                    "user": msgpack_values,
                },
            ),
        }
    ).map(encode),
)


class RawClient:
    """A bare DEALER with CURVE: sends exactly the bytes it is given."""

    def __init__(self, connect: str) -> None:
        addr = parse_connect(connect)[0]
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        pub, sec = zmq.curve_keypair()
        self.sock.curve_serverkey = addr.server_key.encode()
        self.sock.curve_publickey = pub
        self.sock.curve_secretkey = sec
        self.sock.linger = 0
        self.sock.rcvtimeo = 5000
        self.sock.connect(addr.endpoint)

    def exchange(self, *parts: bytes) -> m.ServerFrame:
        """Send, and return the answer (flow-control marks are not answers)."""
        self.sock.send_multipart(list(parts))
        while True:
            frame = decode_server_frame(self.sock.recv())
            if not isinstance(frame.msg, m.Mark):
                return frame

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


BAD_FRAMES = int(os.environ.get("CURVECHAT_FUZZ_FRAMES", "1500"))
"""Frames thrown at one node (`make fuzz-frames` throws 10,000)."""


def test_thousands_of_bad_frames(server: ServerProcess) -> None:
    raw = RawClient(server.connect)
    seen = {"error": 0, "reply": 0}
    try:

        @settings(
            max_examples=BAD_FRAMES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(frames)
        def throw(frame: bytes) -> None:
            reply = raw.exchange(frame)
            if isinstance(reply.msg, m.Error):
                assert reply.msg.code in CODES, reply.msg
                assert reply.msg.message
                seen["error"] += 1
            else:
                seen["reply"] += 1

        throw()
        assert seen["error"] + seen["reply"] >= BAD_FRAMES
        assert seen["error"] > BAD_FRAMES * 0.9

        # frames the protocol forbids outright
        multi = raw.exchange(b"one", b"two")
        assert isinstance(multi.msg, m.Error) and multi.msg.code == "bad_frame"
        big = raw.exchange(encode_request(5, m.Ping(t=1)) + b"\0" * (MAX_FRAME_BYTES + 10))
        assert isinstance(big.msg, m.Error) and big.msg.code == "too_large"
        empty = raw.exchange(b"")
        assert isinstance(empty.msg, m.Error) and empty.msg.code == "bad_frame"
    finally:
        raw.close()

    assert server.proc is not None and server.proc.poll() is None, "the server died"
    fresh = RawClient(server.connect)
    try:
        pong = fresh.exchange(encode_request(1, m.Ping(t=42)))
        assert isinstance(pong.msg, m.Pong) and pong.msg.t == 42 and pong.rid == 1
    finally:
        fresh.close()
    assert "Traceback" not in server.log()


async def test_normal_client_after_fuzz_storm(server: ServerProcess, clients) -> None:  # type: ignore[no-untyped-def]
    raw = RawClient(server.connect)
    try:
        for i in range(500):
            raw.exchange(bytes([i % 256]) * (i % 50 + 1))
    finally:
        raw.close()
    alice, _ = await clients.make("alice", server.connect)
    await alice.create_room("after-fuzz", [])
    ack = await alice.send("after-fuzz", "still alive")
    assert isinstance(ack, m.SendAck) and ack.seq == 1
