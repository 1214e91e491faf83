"""Bytes in, typed messages out (and back). No sockets, no event loop.

`decode_request` / `decode_server_frame` never raise anything but
`RemoteProtocolError`: a frame that is too large, not msgpack, of an unknown
type, of another protocol version, or with a field out of bounds becomes an
error with the code the reply should carry.
"""

from __future__ import annotations

from typing import TypeVar, cast

import msgspec

from curvechat.protocol import limits as L
from curvechat.protocol.errors import (
    UNDECODABLE,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)
from curvechat.protocol.messages import (
    AnyReply,
    AnyRequest,
    BatchItem,
    ClientFrame,
    Envelope,
    MemberOp,
    MessagePush,
    Reply,
    Request,
    Send,
    SendAck,
    SendItem,
    ServerFrame,
)

_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientFrame)
_server_decoder = msgspec.msgpack.Decoder(ServerFrame)
_op_decoder = msgspec.msgpack.Decoder(MemberOp)
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)


class _Head(msgspec.Struct):
    """The part of a frame needed to answer it even when the rest is invalid."""

    v: int = -1
    rid: int = 0


_head_decoder = msgspec.msgpack.Decoder(_Head)


class _Rid(msgspec.Struct):
    """A frame's request id alone: readable whatever its other fields hold."""

    rid: int = 0


_rid_decoder = msgspec.msgpack.Decoder(_Rid)


class _Kind(msgspec.Struct):
    type: object = None


class _PushHead(msgspec.Struct):
    """A server frame's request id and the kind its message names."""

    rid: object = None
    msg: _Kind = msgspec.field(default_factory=_Kind)


_push_head_decoder = msgspec.msgpack.Decoder(_PushHead)


def encode(obj: object) -> bytes:
    return _encoder.encode(obj)


def encode_request(rid: int, req: AnyRequest) -> bytes:
    data = _encoder.encode(ClientFrame(v=L.PROTOCOL_VERSION, rid=rid, req=req))
    if len(data) > L.MAX_FRAME_BYTES:
        raise LocalProtocolError(ErrorCode.TOO_LARGE, f"request of {len(data)} bytes")
    return data


def encode_reply(rid: int, msg: AnyReply) -> bytes:
    return _encoder.encode(ServerFrame(v=L.PROTOCOL_VERSION, rid=rid, msg=msg))


class _RawBatch(Reply, tag="batch", frozen=True):
    """A `Batch` whose items are already encoded (encoding side only: the
    frame around it is encoded as it stands, whatever its field's type says)."""

    items: list[msgspec.Raw]


class _RawStored(msgspec.Struct, frozen=True):
    """A `StoredMessage` whose envelope is already encoded (encoding side only)."""

    seq: int
    ts: int
    envelope: msgspec.Raw


class _RawPush(Reply, tag="push_message", frozen=True):
    """A `MessagePush` of a `_RawStored` (encoding side only, as `_RawBatch`)."""

    room: str
    message: _RawStored


def message_push(room: str, seq: int, ts: int, envelope: bytes) -> MessagePush:
    """The push of a stored message whose envelope is `envelope` as stored
    (the encoding of an `Envelope` the node checked when it took the send):
    encoded, it is the same frame as a `MessagePush` of the decoded envelope,
    without decoding and encoding the envelope again. For encoding only."""
    stored = _RawStored(seq=seq, ts=ts, envelope=msgspec.Raw(envelope))
    return cast(MessagePush, _RawPush(room=room, message=stored))


def is_message_push(msg: object) -> bool:
    """Whether `msg` is a message push (a `MessagePush` or a `message_push`)."""
    return type(msg) is MessagePush or type(msg) is _RawPush


def encode_item(rid: int, msg: SendAck | MessagePush) -> bytes:
    """One item of a `batch` frame; encoded once, it can join many frames."""
    return _encoder.encode(BatchItem(rid=rid, msg=msg))


def encode_batch(items: list[bytes]) -> bytes:
    """A `batch` frame of items from `encode_item` (the caller keeps their
    count and size within `MAX_BATCH_ITEMS` and `BATCH_BUDGET_BYTES`)."""
    raw = [msgspec.Raw(item) for item in items]
    return encode_reply(0, cast(AnyReply, _RawBatch(items=raw)))


class _RawSends(Request, tag="sends", frozen=True):
    """A `Sends` whose items are already encoded (encoding side only, as
    `_RawBatch`)."""

    items: list[msgspec.Raw]


def encode_send_item(rid: int, send: Send) -> bytes:
    """One item of a `sends` request (see `encode_sends`)."""
    return _encoder.encode(SendItem(rid=rid, send=send))


def encode_sends(rid: int, items: list[bytes]) -> bytes:
    """A `sends` request of items from `encode_send_item`, `rid` the first
    item's; raises LocalProtocolError if it would not fit one frame (the
    caller keeps the count within `MAX_SENDS`)."""
    raw = [msgspec.Raw(item) for item in items]
    return encode_request(rid, cast(AnyRequest, _RawSends(items=raw)))


SENDS_OVERHEAD_BYTES = 64
"""A `sends` frame's bytes beyond its items' (a bound, for fitting items in)."""


def peek_request_id(data: bytes) -> int:
    """Best-effort request id of a frame that failed to decode (0 if none)."""
    try:
        rid = _rid_decoder.decode(data).rid
    except UNDECODABLE:
        return 0
    return rid if 0 < rid <= 2**53 else 0


def peek_push_kind(data: bytes) -> str | None:
    """The kind a server frame that failed to decode names, if it is a push
    (request id 0): e.g. a newer node's push of a kind this side does not
    know. None for a reply, or a frame whose kind cannot be read."""
    try:
        head = _push_head_decoder.decode(data)
    except UNDECODABLE:
        return None
    kind = head.msg.type
    if type(head.rid) is not int or head.rid != 0 or not isinstance(kind, str):
        return None
    return kind


T = TypeVar("T")


def _decode(
    decoder: msgspec.msgpack.Decoder[T], data: bytes, what: str, limit: int = L.MAX_FRAME_BYTES
) -> T:
    if len(data) > limit:
        raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"{what} of {len(data)} bytes")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            version = _head_decoder.decode(data).v
        except UNDECODABLE:
            version = -1
        if version not in (-1, L.PROTOCOL_VERSION):
            raise RemoteProtocolError(
                ErrorCode.BAD_VERSION,
                f"protocol version {version} (this side speaks {L.PROTOCOL_VERSION})",
            ) from exc
        raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"invalid {what}: {exc}") from exc
    except UNDECODABLE as exc:
        raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"malformed {what}: {exc}") from exc


def decode_request(data: bytes) -> ClientFrame:
    frame = _decode(_client_decoder, data, "request")
    if frame.v != L.PROTOCOL_VERSION:
        raise RemoteProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {frame.v} (this side speaks {L.PROTOCOL_VERSION})",
        )
    return frame


def decode_server_frame(data: bytes) -> ServerFrame:
    if len(data) > L.MAX_REPLY_BYTES:
        raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"server frame of {len(data)} bytes")
    frame = _decode(_server_decoder, data, "server frame", limit=L.MAX_REPLY_BYTES)
    if frame.v != L.PROTOCOL_VERSION:
        raise RemoteProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {frame.v} (this side speaks {L.PROTOCOL_VERSION})",
        )
    return frame


def decode_member_op(data: bytes) -> MemberOp:
    return _decode(_op_decoder, data, "membership op")


def decode_envelope(data: bytes) -> Envelope:
    return _decode(_envelope_decoder, data, "envelope")
