"""Every request a client sends, as frozen msgspec Structs (see messages.py,
which re-exports them: `m.Send`).

Constraints on each field are checked while decoding, so a decoded request
is already within the protocol's limits.

This module must never do I/O or hold secrets.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from curvechat.protocol import limits as L
from curvechat.protocol.wire import (
    Envelope,
    Epoch,
    EpochUpload,
    Key32,
    KeyPacket,
    Limit,
    Millis,
    RequestId,
    Room,
    Seq,
    ShortText,
    Sig64,
    SignedOp,
    SignedRecord,
    Txn,
    User,
    Wire,
    check_room,
)


class Request(Wire, tag_field="type", frozen=True):
    """Base of every client request."""


class Hello(Request, tag="hello", frozen=True, omit_defaults=True):
    """Fields at their defaults are left out, so that a hello without
    `batch` is one that nodes older than the field still take."""

    client: Annotated[str, Meta(max_length=L.MAX_CLIENT_ID_LEN)] = ""
    # The client reads `batch` frames: the node may then send this
    # connection's acks and message pushes several to a frame.
    batch: bool = False
    # The client would send several sends to a frame (`sends`): a node that
    # takes them says so in its welcome.
    sends: bool = False


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
    """Add a member; `packets` wrap earlier epoch keys for them (at most
    MAX_BATCH: a client sends the newest, and the rest with `ShareKeys`)."""

    room: Room
    op: SignedOp
    packets: Annotated[list[KeyPacket], Meta(max_length=L.MAX_BATCH)]

    def __post_init__(self) -> None:
        check_room(self.room)


class ShareKeys(Request, tag="share_keys", frozen=True):
    """More history for `recipient`, a member the sender added last: key
    packets of earlier epochs that did not fit in its `AddMember`. An
    (epoch, recipient) that has a packet already keeps it (first wins)."""

    room: Room
    recipient: User
    packets: Annotated[list[KeyPacket], Meta(min_length=1, max_length=L.MAX_BATCH)]

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


class SendItem(Wire, frozen=True):
    """One send of a `sends` request, with the request id its answer carries."""

    rid: RequestId
    send: Send


class Sends(Request, tag="sends", frozen=True):
    """Several sends in one frame, in the order sent, to a node whose welcome
    said `sends`. The node answers each item as if it had come in a frame of
    its own with the item's `rid`; the frame's own `rid` is the first item's
    (it answers a frame the node cannot read). One frame instead of one per
    message saves both ends a CURVE message and a pass of their I/O loop."""

    items: Annotated[list[SendItem], Meta(min_length=1, max_length=L.MAX_SENDS)]


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


class Contacts(Request, tag="contacts", frozen=True):
    """The requester's contact list, and whether only its users may put them
    in a room; the reply is `ContactList`."""


class SetContacts(Request, tag="set_contacts", frozen=True, omit_defaults=True):
    """Change the requester's contact list: `add` and `remove` users (the
    same user in both is refused), and with `only` set, whether only the
    users on it may create a room with them in it or add them to one (a
    direct-message room too). The reply is the list as it now is
    (`ContactList`). Contacts are names the node knows, not keys: the
    security of a room still rests on its members' pinned keys."""

    only: bool | None = None
    add: Annotated[list[User], Meta(max_length=L.MAX_CONTACTS)] = []  # noqa: RUF012 (a Struct)
    remove: Annotated[list[User], Meta(max_length=L.MAX_CONTACTS)] = []  # noqa: RUF012


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
    | ShareKeys
    | RemoveMember
    | Leave
    | Promote
    | NewEpoch
    | ListRooms
    | Members
    | Send
    | Sends
    | History
    | Sync
    | FetchKeys
    | Ping
    | Announce
    | Contacts
    | SetContacts
    | Bye
)
