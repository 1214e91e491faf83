"""The peer protocol's frames: every request and reply round-trips, and
anything else a peer may send (garbage, another version, a field out of
bounds, too many bytes) becomes a RemoteProtocolError with its code."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curvechat.protocol import messages as m
from curvechat.protocol import peer as p
from curvechat.protocol.errors import RemoteProtocolError

ENV = m.Envelope(
    room="general", epoch=1, sender="alice", txn="txn-0001", nonce=bytes(24), ct=bytes(16),
    sig=bytes(64),
)  # fmt: skip
REF = p.TxnRef("alice", "txn-0001")
ASKS: list[p.AnyPeerRequest] = [
    p.Digest(room="general", have=[REF]),
    p.Digest(room="@alice:bob", have=[]),
    p.Offer(room="general", envelopes=[ENV]),
]
ANSWERS: list[p.AnyPeerReply] = [
    p.DigestReply(room="general", envelopes=[ENV], want=[REF]),
    p.OfferReply(room="general", accepted=1, refused=[p.Refused("txn-0002", "bad_envelope")]),
    p.PeerError(code="not_shared", message="no"),
]


@pytest.mark.parametrize("req", ASKS)
def test_requests_round_trip(req: p.AnyPeerRequest) -> None:
    frame = p.PeerAsk(v=p.PEER_VERSION, rid=7, req=req, user="alice")
    assert p.decode_ask(p.encode_peer(frame)) == frame


@pytest.mark.parametrize("msg", ANSWERS)
def test_replies_round_trip(msg: p.AnyPeerReply) -> None:
    frame = p.PeerAnswer(v=p.PEER_VERSION, rid=2**53, msg=msg, user="bob")
    assert p.decode_answer(p.encode_peer(frame)) == frame


def test_a_record_round_trips_and_is_bounded() -> None:
    record = p.PeerRecord(
        user="alice", transport_pub=bytes(32), endpoints=["tcp://192.0.2.1:7000"], ts=1
    )
    assert p.decode_record(p.encode_record(record)) == record
    with pytest.raises(RemoteProtocolError) as info:
        p.decode_record(msgspec.msgpack.encode({**msgspec.structs.asdict(record),
                                                "endpoints": ["udp://x:1"]}))  # fmt: skip
    assert info.value.code == "bad_frame"


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://localhost:5432",  # a name: every member who dials it would ask a resolver
        "tcp://internal.example:80",
        "tcp://-:1",  # passed the pattern; libzmq refused it at every round
        "tcp://.:1",
        "tcp://]:1",
        "tcp://0.0.0.0:7000",
        "tcp://[::]:7000",
        "tcp://224.0.0.251:5353",
        "tcp://255.255.255.255:9",
        "tcp://::1:7000",  # IPv6 without brackets
        "tcp://[192.0.2.1]:7000",
        "tcp://192.0.2.1:0",
        "tcp://192.0.2.1:65536",
    ],
)
def test_a_record_names_addresses_a_member_may_dial(endpoint: str) -> None:
    good = p.PeerRecord(
        user="alice", transport_pub=bytes(32), endpoints=["tcp://192.0.2.1:7000"], ts=1
    )
    fields = {**msgspec.structs.asdict(good), "endpoints": ["tcp://192.0.2.1:7000", endpoint]}
    with pytest.raises(RemoteProtocolError) as info:
        p.decode_record(msgspec.msgpack.encode(fields))
    assert info.value.code == "bad_frame" and "endpoint" in info.value.message
    for fine in (
        "tcp://127.0.0.1:7000",
        "tcp://[::1]:7000",
        "tcp://[fe80::1]:7",
        "tcp://10.1.2.3:1",
    ):
        assert p.endpoint_problem(fine) is None


def test_what_a_peer_may_not_send() -> None:
    too_many = p.Digest(room="general", have=[REF] * (p.MAX_DIGEST + 1))
    cases = {
        "bad_version": p.encode_peer(p.PeerAsk(v=1, rid=1, req=ASKS[0], user="alice")),
        "bad_frame": msgspec.msgpack.encode(
            p.PeerAsk(v=p.PEER_VERSION, rid=1, req=too_many, user="alice")
        ),
        "too_large": b"\x00" * (p.MAX_PEER_FRAME + 1),
    }
    for code, data in cases.items():
        with pytest.raises(RemoteProtocolError) as info:
            p.decode_ask(data)
        assert info.value.code == code


@given(st.binary(max_size=300))
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    for decode in (p.decode_ask, p.decode_answer, p.decode_record):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)
