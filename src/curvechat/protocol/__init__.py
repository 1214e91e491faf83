"""The wire protocol: message types, limits, error codes and the codec.

Sans-IO: bytes in, typed messages out. Nothing here opens a socket, starts an
event loop or touches a key.
"""

from curvechat.protocol.codec import (
    decode_envelope,
    decode_member_op,
    decode_request,
    decode_server_frame,
    encode,
    encode_batch,
    encode_item,
    encode_reply,
    encode_request,
    encode_send_item,
    encode_sends,
    is_message_push,
    message_push,
    peek_push_kind,
    peek_request_id,
)
from curvechat.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from curvechat.protocol.limits import PROTOCOL_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "decode_envelope",
    "decode_member_op",
    "decode_request",
    "decode_server_frame",
    "encode",
    "encode_batch",
    "encode_item",
    "encode_reply",
    "encode_request",
    "encode_send_item",
    "encode_sends",
    "is_message_push",
    "message_push",
    "peek_push_kind",
    "peek_request_id",
]
