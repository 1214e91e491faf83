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
    StoredSeq as StoredSeq,
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


# isort: off
from curvechat.protocol.requests import (
    Request as Request,
    Hello as Hello,
    Register as Register,
    Lookup as Lookup,
    CreateRoom as CreateRoom,
    AddMember as AddMember,
    ShareKeys as ShareKeys,
    RemoveMember as RemoveMember,
    Leave as Leave,
    Promote as Promote,
    NewEpoch as NewEpoch,
    ListRooms as ListRooms,
    Members as Members,
    Send as Send,
    SendItem as SendItem,
    Sends as Sends,
    History as History,
    Sync as Sync,
    FetchKeys as FetchKeys,
    Ping as Ping,
    Announce as Announce,
    Contacts as Contacts,
    SetContacts as SetContacts,
    Bye as Bye,
    AnyRequest as AnyRequest,
)
# isort: on


# --- replies and pushes -----------------------------------------------------


class Reply(Wire, tag_field="type", frozen=True):
    """Base of every server reply and push."""


class Welcome(Reply, tag="welcome", frozen=True, omit_defaults=True):
    """Fields at their defaults are left out, so that clients older than a
    field still read the welcome."""

    node: ShortText
    boot: ShortText
    user: User | None
    time: Millis
    version: int
    # Cluster mode: the connect strings of the live nodes (from the registry),
    # so a client that knew one node can fail over to the others.
    peers: Annotated[list[ShortText], Meta(max_length=L.MAX_PEERS)] = []  # noqa: RUF012 (a Struct)
    # The node takes `sends` requests (several sends in one frame); said
    # only to a client whose hello asked.
    sends: bool = False


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
    seq: StoredSeq
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


class ContactList(Reply, tag="contact_list", frozen=True):
    """The requester's contacts, sorted; `only`: only they may put the
    requester in a room."""

    only: bool
    users: Annotated[list[User], Meta(max_length=L.MAX_CONTACTS)]


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


class BatchItem(Wire, frozen=True):
    """One ack (`rid` of the send it answers) or message push (`rid` 0)."""

    rid: Annotated[int, Meta(ge=0, le=2**53)]
    msg: SendAck | MessagePush


class Batch(Reply, tag="batch", frozen=True):
    """Acks and message pushes for one connection, in the order the node
    made them; sent (with `rid` 0) only to a client whose hello said `batch`."""

    items: Annotated[list[BatchItem], Meta(min_length=1, max_length=L.MAX_BATCH_ITEMS)]


class RoomPush(Reply, tag="push_room", frozen=True):
    """Something other than a message changed in a room the user is (or was
    just made) a member of: fetch members / keys again."""

    room: Room
    reason: Literal["members", "epoch", "keys", "removed", "left"]

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


class Move(Reply, tag="push_move", frozen=True, omit_defaults=True):
    """The node asks the client to reconnect to another live node (it is
    draining before a restart, hands the client back to the node it would
    pick, or has more than its share of clients). A reason this client does
    not know means the same: move. `peers`: the live nodes as the node knows
    them now (as in `welcome`), or for ``spread`` only the node to go to."""

    reason: Annotated[str, Meta(pattern=r"^[a-z_]{1,32}\Z")]
    peers: Annotated[list[ShortText], Meta(max_length=L.MAX_PEERS)] = []  # noqa: RUF012 (a Struct)


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
    | ContactList
    | ByeAck
    | Error
    | MessagePush
    | Batch
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
