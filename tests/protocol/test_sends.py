"""`sends` requests: several sends in one frame. They round-trip, keep the
protocol's limits (1 to MAX_SENDS items, nothing but sends, one frame's
bytes), and a frame that does not decode is answered to its first send."""

from __future__ import annotations

import msgspec
import pytest

from curvechat.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    decode_request,
    encode_request,
    encode_send_item,
    encode_sends,
    peek_request_id,
)
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_CIPHERTEXT_BYTES, MAX_SENDS

ENVELOPE = m.Envelope(
    room="general",
    sender="alice",
    epoch=0,
    txn="t",
    nonce=bytes(24),
    ct=b"c" * 40,
    sig=bytes(64),
)


def send(i: int) -> m.Send:
    return m.Send(
        envelope=msgspec.structs.replace(ENVELOPE, txn=f"txn-{i:08d}"), after=f"txn-{i - 1:08d}"
    )


def sends_frame(rids: list[int]) -> bytes:
    return encode_sends(rids[0], [encode_send_item(r, send(r)) for r in rids])


def test_a_sends_frame_decodes_as_its_items_in_order() -> None:
    frame = decode_request(sends_frame([5, 6, 7]))
    assert frame.rid == 5 and isinstance(frame.req, m.Sends)
    assert [(i.rid, i.send) for i in frame.req.items] == [(r, send(r)) for r in (5, 6, 7)]
    # the same bytes as a `Sends` encoded in one go
    whole = m.Sends(items=[m.SendItem(rid=r, send=send(r)) for r in (5, 6, 7)])
    assert decode_request(encode_request(5, whole)).req == whole


@pytest.mark.parametrize("count", [0, MAX_SENDS + 1])
def test_a_sends_frame_of_no_items_or_too_many_is_a_bad_frame(count: int) -> None:
    frame = msgspec.msgpack.decode(sends_frame([1]))  # a valid one, as plain data
    assert decode_request(msgspec.msgpack.encode(frame))
    frame["req"]["items"] *= count
    with pytest.raises(RemoteProtocolError) as refused:
        decode_request(msgspec.msgpack.encode(frame))
    assert refused.value.code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "item",
    [
        {"rid": 1, "send": {"type": "ping", "t": 1}},  # only sends
        {"rid": 0, "send": {"type": "send", "envelope": "x"}},  # rid 0 is for pushes
        {"rid": 1, "send": {"type": "sends", "items": []}},  # no nesting
    ],
)
def test_a_sends_item_that_is_not_a_send_with_a_rid_is_a_bad_frame(item: object) -> None:
    frame = {"v": PROTOCOL_VERSION, "rid": 1, "req": {"type": "sends", "items": [item]}}
    with pytest.raises(RemoteProtocolError) as refused:
        decode_request(msgspec.msgpack.encode(frame))
    assert refused.value.code == ErrorCode.BAD_FRAME


def test_a_sends_frame_larger_than_a_frame_is_refused_before_sending() -> None:
    big = msgspec.structs.replace(ENVELOPE, ct=b"x" * MAX_CIPHERTEXT_BYTES)
    items = [encode_send_item(r, m.Send(envelope=big)) for r in range(1, 5)]
    with pytest.raises(LocalProtocolError) as refused:
        encode_sends(1, items)
    assert refused.value.code == ErrorCode.TOO_LARGE


def test_a_sends_frame_that_does_not_decode_is_answered_to_its_first_rid() -> None:
    assert peek_request_id(sends_frame([3, 4, 9])) == 3
    bad = {"rid": 3, "req": {"type": "sends", "items": [{"rid": 3, "send": 1}, {"rid": 4}]}}
    data = msgspec.msgpack.encode({"v": PROTOCOL_VERSION, **bad})
    with pytest.raises(RemoteProtocolError):
        decode_request(data)
    assert peek_request_id(data) == 3
