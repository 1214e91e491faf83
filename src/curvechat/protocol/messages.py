"""Every message on the wire, as frozen msgspec Structs.

A client sends a `ClientFrame` holding one `Request`; the server answers with a
`ServerFrame` holding a `Reply` (same `rid`) or, unprompted, a `Push`
(`rid` 0). Constraints on each field (lengths, patterns, ranges) are checked
while decoding, so a decoded message is already within the protocol's limits.

This module must never do I/O or hold secrets: message bodies travel as
`Envelope` ciphertext built by `curvechat.crypto`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from curvechat.protocol import limits as L

# The payload and field types are part of this namespace too (`m.Envelope`).
# isort: off
from curvechat.protocol.wire import (
    Envelope as Envelope,
    Epoch as Epoch,
    EpochUpload as EpochUpload,
    Key32 as Key32,
    KeyPacket as KeyPacket,
    Limit as Limit,
    MemberOp as MemberOp,
    Millis as Millis,
    Nonce24 as Nonce24,
    OpIndex as OpIndex,
    OpKind as OpKind,
    RequestId as RequestId,
    Room as Room,
    RoomInfo as RoomInfo,
    Seq as Seq,
    ShortText as ShortText,
    Sig64 as Sig64,
    SignedOp as SignedOp,
    SignedRecord as SignedRecord,
    StoredMessage as StoredMessage,
    Txn as Txn,
    User as User,
    UserKeys as UserKeys,
    Wire,
    check_room,
)
# isort: on


class Request(Wire, tag_field="type", frozen=True):
    """Base of every client request."""


class Hello(Request, tag="hello", frozen=True):
    client: Annotated[str, Meta(max_length=L.MAX_CLIENT_ID_LEN)] = ""


class Register(Request, tag="register", frozen=True):
    """Bind `user` to identity key `sign_pub` and to this connection's CURVE key.

    `transport_sig` is the identity's signature over the transport key (see
    `curvechat.crypto.identity.transport_statement`).
    """

    user: User
    sign_pub: Key32
    transport_sig: Sig64


class Lookup(Request, tag="lookup", frozen=True):
    users: Annotated[list[User], Meta(min_length=1, max_length=L.MAX_BATCH)]


class CreateRoom(Request, tag="create_room", frozen=True):
    room: Room
    ops: Annotated[list[SignedOp], Meta(min_length=1, max_length=L.MAX_BATCH)]
    epoch: EpochUpload

    def __post_init__(self) -> None:
        check_room(self.room)


class AddMember(Request, tag="add_member", frozen=True):
    """Add a member; `packets` wrap every earlier epoch key for them."""

    room: Room
    op: SignedOp
    packets: Annotated[list[KeyPacket], Meta(max_length=L.MAX_BATCH)]

    def __post_init__(self) -> None:
        check_room(self.room)


class RemoveMember(Request, tag="remove_member", frozen=True):
    """Remove a member and start a new epoch the removed member never gets."""

    room: Room
    op: SignedOp
    epoch: EpochUpload

    def __post_init__(self) -> None:
        check_room(self.room)


class Leave(Request, tag="leave", frozen=True):
    room: Room
    op: SignedOp

    def __post_init__(self) -> None:
        check_room(self.room)


class Promote(Request, tag="promote", frozen=True):
    room: Room
    op: SignedOp

    def __post_init__(self) -> None:
        check_room(self.room)


class NewEpoch(Request, tag="new_epoch", frozen=True):
    room: Room
    epoch: EpochUpload

    def __post_init__(self) -> None:
        check_room(self.room)


class ListRooms(Request, tag="list_rooms", frozen=True):
    pass


class Members(Request, tag="members", frozen=True):
    room: Room
    after: Annotated[int, Meta(ge=-1, le=2**31)] = -1

    def __post_init__(self) -> None:
        check_room(self.room)


class Send(Request, tag="send", frozen=True):
    """`after`: the txn of the sender's previous message in this room that is
    still unacknowledged in the same pipelined window; the message is stored
    only once that one is (else `out_of_order`), so one sender's messages
    are never stored out of the order sent."""

    envelope: Envelope
    after: Txn | None = None


class History(Request, tag="history", frozen=True):
    """Messages of a room: the newest `limit` before `before`, or the oldest
    `limit` after `after` (exclusive bounds)."""

    room: Room
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 100

    def __post_init__(self) -> None:
        check_room(self.room)


class Sync(Request, tag="sync", frozen=True):
    """Everything after each cursor, for every room the user is in (a room
    missing from `cursors` syncs from its beginning). With `only`, just the
    rooms named in `cursors` (how a client in more than MAX_BATCH rooms syncs
    them a batch at a time)."""

    cursors: Annotated[dict[Room, Seq], Meta(max_length=L.MAX_BATCH)]
    limit: Limit = L.MAX_PAGE
    only: bool = False

    def __post_init__(self) -> None:
        for room in self.cursors:
            check_room(room)


class FetchKeys(Request, tag="fetch_keys", frozen=True):
    room: Room
    min_epoch: Epoch = 0

    def __post_init__(self) -> None:
        check_room(self.room)


class Ping(Request, tag="ping", frozen=True):
    """Liveness probe. The client reports what only it can measure, so the
    node can show it to operators: its last round-trip time, how many times
    it has reconnected since it started, and how many messages wait in its
    outbox."""

    t: Millis
    rtt_ms: Annotated[float, Meta(ge=0, le=3_600_000)] | None = None
    reconnects: Annotated[int, Meta(ge=0, le=2**31)] = 0
    outbox: Annotated[int, Meta(ge=0, le=2**31)] = 0
    read_mark: Annotated[int, Meta(ge=0, le=2**53)] = 0
    """The latest `push_mark` the client has read (0: none): flow control,
    proof that it read everything the node sent before that mark."""
    prev_node: ShortText = ""
    """The `node` of the welcome of the client's previous live connection
    ("" if this is its first): tells a reconnect to the same node (that may
    have restarted meanwhile) from an arrival from another node."""


class Announce(Request, tag="announce", frozen=True):
    """Publish where this user listens for peers (docs/protocol.md, "Peer
    protocol"); the reply is `Announced`."""

    record: SignedRecord
    peer_messages: Annotated[int, Meta(ge=0, le=2**31)] = 0
    """Messages the client wrote or took peer to peer while it could reach
    no server, since its last announcement (a metric for operators)."""


class Bye(Request, tag="bye", frozen=True):
    """The client is closing this connection on purpose (the user quit): the
    node shows it as left, not as a failure. Best effort: a client that
    cannot say it (killed, cut off) is seen as disconnected, as before."""


AnyRequest = (
    Hello
    | Register
    | Lookup
    | CreateRoom
    | AddMember
    | RemoveMember
    | Leave
    | Promote
    | NewEpoch
    | ListRooms
    | Members
    | Send
    | History
    | Sync
    | FetchKeys
    | Ping
    | Announce
    | Bye
)


# --- replies and pushes -----------------------------------------------------


class Reply(Wire, tag_field="type", frozen=True):
    """Base of every server reply and push."""


class Welcome(Reply, tag="welcome", frozen=True):
    node: ShortText
    boot: ShortText
    user: User | None
    time: Millis
    version: int
    # Cluster mode: the connect strings of the live nodes (from the registry),
    # so a client that knew one node can fail over to the others.
    peers: Annotated[list[ShortText], Meta(max_length=L.MAX_PEERS)] = []  # noqa: RUF012 (a Struct)


class Registered(Reply, tag="registered", frozen=True):
    user: User


class Directory(Reply, tag="directory", frozen=True):
    users: list[UserKeys]


class RoomChanged(Reply, tag="room_changed", frozen=True):
    info: RoomInfo


class RoomList(Reply, tag="room_list", frozen=True):
    rooms: list[RoomInfo]


class MemberLog(Reply, tag="member_log", frozen=True):
    room: Room
    ops: list[SignedOp]

    def __post_init__(self) -> None:
        check_room(self.room)


class SendAck(Reply, tag="send_ack", frozen=True):
    room: Room
    txn: Txn
    seq: Seq
    ts: Millis
    duplicate: bool = False

    def __post_init__(self) -> None:
        check_room(self.room)


class Messages(Reply, tag="messages", frozen=True):
    room: Room
    items: list[StoredMessage]
    head: Seq

    def __post_init__(self) -> None:
        check_room(self.room)


class SyncReply(Reply, tag="sync", frozen=True):
    rooms: list[Messages]
    more: bool


class KeyPackets(Reply, tag="key_packets", frozen=True):
    room: Room
    packets: list[KeyPacket]

    def __post_init__(self) -> None:
        check_room(self.room)


class Pong(Reply, tag="pong", frozen=True):
    t: Millis
    time: Millis
    node: ShortText
    boot: ShortText


class Announced(Reply, tag="announced", frozen=True):
    """The node keeps the record until it stops or a newer one comes."""


class ByeAck(Reply, tag="bye_ack", frozen=True):
    """The node has noted the goodbye; the client may close the socket."""


class Error(Reply, tag="error", frozen=True):
    code: ShortText
    message: ShortText


class MessagePush(Reply, tag="push_message", frozen=True):
    room: Room
    message: StoredMessage

    def __post_init__(self) -> None:
        check_room(self.room)


class RoomPush(Reply, tag="push_room", frozen=True):
    """Something other than a message changed in a room the user is (or was
    just made) a member of: fetch members / keys again."""

    room: Room
    reason: Literal["members", "epoch", "keys", "removed"]

    def __post_init__(self) -> None:
        check_room(self.room)


class Mark(Reply, tag="push_mark", frozen=True):
    """Flow control: the node asks the client to confirm it has read up to
    here, by sending a ping with `read_mark` = `mark` (at once)."""

    mark: Annotated[int, Meta(ge=1, le=2**53)]


class Resync(Reply, tag="push_resync", frozen=True):
    """The node stopped pushing to this connection while it did not read
    (its byte budget, or the node's, was spent): sync from your cursors."""

    reason: ShortText


class Move(Reply, tag="push_move", frozen=True):
    """The node asks the client to reconnect to another live node (it is
    draining before a restart). A reason this client does not know means
    the same: move."""

    reason: Annotated[str, Meta(pattern=r"^[a-z_]{1,32}\Z")]


AnyReply = (
    Welcome
    | Registered
    | Directory
    | RoomChanged
    | RoomList
    | MemberLog
    | SendAck
    | Messages
    | SyncReply
    | KeyPackets
    | Pong
    | Announced
    | ByeAck
    | Error
    | MessagePush
    | RoomPush
    | Mark
    | Resync
    | Move
)


class ClientFrame(Wire, frozen=True):
    v: int
    rid: RequestId
    req: AnyRequest


class ServerFrame(Wire, frozen=True):
    v: int
    rid: Annotated[int, Meta(ge=0, le=2**53)]
    msg: AnyReply
