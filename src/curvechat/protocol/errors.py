"""Error codes and the protocol's exception tree.

::

    CurvechatError           the root of every error curvechat raises on purpose
    └── ProtocolError        anything wrong with a frame or a message
        ├── LocalProtocolError   we were about to send something invalid
        └── RemoteProtocolError  the peer sent something invalid

Expected refusals by a server are not exceptions on the wire: they travel as
an `Error` reply carrying one of the `ErrorCode` values below, and the client
turns them into `ServerRefused`. Every code is listed in docs/protocol.md.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

UNDECODABLE: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
"""What decoding bytes from outside can raise (`msgspec.ValidationError` is a
`DecodeError`): besides malformed and invalid input, a bare
`UnicodeDecodeError` for invalid UTF-8 in map keys, and `RecursionError` for
a value nested deeper than the interpreter's recursion limit (msgspec
recurses once per level, also to skip a field it does not know: about a
thousand levels on Python 3.11, so a frame of about a thousand bytes).
Every decoder of outside bytes catches all three."""


class ErrorCode(enum.StrEnum):
    # frame level: the request could not be understood
    BAD_FRAME = "bad_frame"
    """Not a msgpack frame of a known request type, or a field out of bounds."""
    TOO_LARGE = "too_large"
    """The frame is larger than MAX_FRAME_BYTES."""
    BAD_VERSION = "bad_version"
    """The frame's protocol version is not one this server speaks."""
    # identity
    NOT_REGISTERED = "not_registered"
    """The connection's CURVE key is not bound to any user; register first."""
    NAME_TAKEN = "name_taken"
    """The user name is bound to another identity key."""
    KEY_TAKEN = "key_taken"
    """The transport key is already bound to another user."""
    BAD_SIGNATURE = "bad_signature"
    """A signature does not verify against the signer's registered key."""
    NO_SUCH_USER = "no_such_user"
    # rooms and membership
    NO_SUCH_ROOM = "no_such_room"
    ROOM_EXISTS = "room_exists"
    NOT_MEMBER = "not_member"
    """Only members may read, post or see the members of a room."""
    FORBIDDEN = "forbidden"
    """The operation needs a right the actor lacks (e.g. admin to add/remove)."""
    CONTACTS_ONLY = "contacts_only"
    """A user the room would hold takes rooms only from their contacts, and
    the requester is not one (`set_contacts`): nothing was changed."""
    BAD_OP = "bad_op"
    """A membership op is malformed or not valid in the room's current state."""
    CONFLICT = "conflict"
    """A compare-and-swap lost: the room's membership log or epoch moved on."""
    STALE_EPOCH = "stale_epoch"
    """The message is encrypted under an epoch that is no longer current."""
    OUT_OF_ORDER = "out_of_order"
    """The send names an earlier message of the same sender (`after`) that is
    not stored: nothing was stored; resend from the earlier one."""
    BAD_ENVELOPE = "bad_envelope"
    """The envelope's room, sender or epoch do not match the request."""
    # service
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    """The user already has as many connections to this node as it allows."""
    STORE_UNAVAILABLE = "store_unavailable"
    """The store could not commit; nothing was acknowledged. Retry later."""
    STORE_FULL = "store_full"
    """The node's disk is nearly full (under the space it keeps free): new
    messages, users and rooms are refused, nothing was stored. Retry later."""
    DRAINING = "draining"
    """The node is draining (before a restart) and takes no new connection:
    connect to another node."""
    INTERNAL = "internal"
    """A bug on the server; the request had no effect that was acknowledged."""


class CurvechatError(Exception):
    """The root of every error curvechat raises on purpose (the tree is drawn
    in `curvechat.client.errors`). `code` names it in one word, for exit
    messages, logs and tests; `str()` says it in words, without secrets."""

    code: str = "error"


class ConfigError(CurvechatError):
    """A file, flag or setting the operator or user gave cannot be used (a
    node name, a token or key file, the monitor's options): the process says
    which and why, and does not start."""

    code = "bad_config"


class BindFailed(ConfigError):
    """An address to listen on cannot be taken (in use, not one of this
    host's, not allowed): the process names it and does not start."""

    code = "bind_failed"


class DataDirError(ConfigError):
    """A data directory (or a file in it) cannot be made, read or written."""

    code = "data_dir"


class DataDirInUse(DataDirError):
    """Another node holds the data directory (its lock file): two nodes on
    one directory would share its key, its connect file and its store."""

    code = "data_dir_in_use"


class ProtocolError(CurvechatError):
    """Base of every protocol error; carries the code a reply would use."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a frame we cannot accept."""
