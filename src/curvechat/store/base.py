"""The store: one async interface, two backends (SQLite now, etcd later).

The store keeps users, rooms, membership logs, epochs, key packets and
message envelopes. It never sees plaintext and never interprets crypto: the
server validates ops and envelopes before calling it, and passes the derived
facts (who is a member, who is an admin) along so the store can answer
membership queries.

Every method may raise `StoreUnavailable` (the backend could not be reached or
could not commit: nothing was changed or acknowledged). Methods that change
state are atomic: all of it or nothing. The contract tests in tests/store run
every backend through the same checks.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from curvechat.protocol.errors import CurvechatError

if TYPE_CHECKING:
    from curvechat.store.reserve import Need


class StoreError(CurvechatError):
    """Base of the store's errors."""

    code = "store"


class StoreUnavailable(StoreError):
    """The backend could not be reached or could not commit. Nothing changed."""


class StoreFull(StoreUnavailable):
    """The node's disk is under the space it keeps free (`store/reserve.py`):
    new messages, users and rooms wait. Nothing changed; retry later."""

    code = "store_full"


class StoreRefused(StoreUnavailable):
    """The backend refused this node: credentials it does not accept, a TLS
    set-up that does not match its own, or no permission on the node's keys.
    Retrying does not help; the operator must fix the set-up. `code` says
    which (``etcd_auth``, ``etcd_tls``, ``etcd_permission``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NodeNameTaken(StoreError):
    """Another live node is registered under this node's name (cluster mode):
    the node does not start, so that two nodes never share a registry entry."""

    code = "node_name_taken"


class NameTaken(StoreError):
    """The user name is already bound to another identity key."""


class KeyTaken(StoreError):
    """The transport key is already bound to another user."""


class RoomExists(StoreError):
    pass


class NoSuchRoom(StoreError):
    pass


class Conflict(StoreError):
    """A compare-and-swap failed: the op index or epoch is not the next one,
    or a user's contacts are not the ones the caller expected."""


class ChangeTooLarge(StoreError):
    """The change cannot be written atomically by this backend (e.g. more
    operations than one etcd transaction may carry). Nothing changed."""


class UserRecord(msgspec.Struct, frozen=True):
    user: str
    sign_pub: bytes
    registered_ms: int


class OpRecord(msgspec.Struct, frozen=True):
    """One signed membership op as stored (index is its position in the log)."""

    index: int
    op: bytes
    sig: bytes


class MemberChange(msgspec.Struct, frozen=True):
    """The effect of an op on the member table, computed by the caller."""

    user: str
    present: bool
    admin: bool = False


class PacketRecord(msgspec.Struct, frozen=True):
    room: str
    epoch: int
    recipient: str
    sender: str
    box: bytes


class EpochRecord(msgspec.Struct, frozen=True):
    epoch: int
    after_op: int
    creator: str


class RoomRecord(msgspec.Struct, frozen=True):
    room: str
    head: int  # last message seq, 0 when empty (seqs start at 1)
    epoch: int  # current epoch number
    epoch_after_op: int  # the membership op index the current epoch is based on
    op_head: int  # index of the last membership op
    created_ms: int


class NewMessage(msgspec.Struct, frozen=True):
    room: str
    sender: str
    txn: str
    envelope: bytes  # the msgpack-encoded Envelope, stored as is
    # (epoch, op_head) of the room the sender's checks were made against: the
    # message is stored only if the room is still there when it commits (a
    # membership change or rotation in between makes it `stale`). None: no check.
    expect: tuple[int, int] | None = None
    # The txn of the same sender's message in the same room that must be
    # stored before this one (or earlier in the same group): if it is not,
    # nothing is stored and the ack says `behind`. None: no check.
    after: str | None = None
    # Cluster mode: the boot id stored as the message's origin, "" for the
    # committing store's own (a room's owner commits the messages other
    # nodes forward to it as its own: server/nodelink.py). Backends without
    # a watch ignore it.
    origin: str = ""


class Committed(msgspec.Struct, frozen=True):
    """The ack for one message: its seq and server timestamp. `duplicate` is
    True when (room, sender, txn) was already stored: seq/ts are then the
    original ones and nothing new was stored. `stale` is True when the
    message's `expect` no longer matched the room: nothing was stored, seq
    and ts are 0 (a duplicate is reported as such, never as stale).
    `behind` is True when the message's `after` is not stored: nothing was
    stored, seq and ts are 0 (checked after the duplicate check, before the
    stale one)."""

    room: str
    txn: str
    seq: int
    ts_ms: int
    duplicate: bool
    stale: bool = False
    behind: bool = False
    # Set by the node, never by a store: committed by another node (the
    # room's owner), which pushes it to its own clients; every other node's
    # cluster watch delivers it to theirs.
    remote: bool = False


class ContactsRecord(msgspec.Struct, frozen=True):
    """One user's contacts as stored: `users` sorted, without repeats;
    `only`: only they may put the user in a room (server/contacts.py)."""

    only: bool = False
    users: tuple[str, ...] = ()


class StoredRow(msgspec.Struct, frozen=True):
    room: str
    seq: int
    ts_ms: int
    sender: str
    txn: str
    envelope: bytes


def check_packets(room: str, packets: Sequence[PacketRecord]) -> None:
    """Every backend's argument check: each key packet is for `room`."""
    for packet in packets:
        if packet.room != room:
            raise ValueError(f"a key packet for room {packet.room!r} given for room {room!r}")


def check_new_room(
    room: str, ops: Sequence[OpRecord], epoch: EpochRecord, packets: Sequence[PacketRecord]
) -> None:
    """Every backend's argument check of `create_room`."""
    if [op.index for op in ops] != list(range(len(ops))):
        raise ValueError("create_room takes ops indexed 0..n-1")
    if epoch.epoch != 0:
        raise ValueError("create_room starts epoch 0")
    check_packets(room, packets)


class Store(abc.ABC):
    """Async store interface. Implementations must be safe to call from many
    tasks of one event loop at once."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / create the schema. Raises StoreUnavailable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources; pending writes are finished first."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store can serve: the etcd store
        writes a key (so a cluster that refuses writes fails it); the SQLite
        store takes the write lock and reads, but does not find a full disk."""

    def check_space(self, need: Need = "content") -> None:
        """Raise StoreFull if a write for `need` must wait for disk space
        (the SQLite store's reserve, `store/reserve.py`, whose floor for a
        departure or a leave is lower than for new content): the store
        itself asks it before new messages, users and rooms, and the node
        before every membership change. The etcd store has none: etcd keeps
        its own quota."""
        return None

    # --- users -----------------------------------------------------------
    @abc.abstractmethod
    async def register(self, user: str, sign_pub: bytes, transport_pub: bytes) -> None:
        """Bind `user` to `sign_pub` (first time) and `transport_pub` to `user`.

        Idempotent for the same triple; a second transport key for the same
        user and identity key is added. Raises NameTaken if `user` is bound to
        another sign_pub, KeyTaken if `transport_pub` belongs to another user.
        """

    @abc.abstractmethod
    async def user_for_transport(self, transport_pub: bytes) -> str | None:
        """The user bound to a transport (CURVE) key, or None."""

    @abc.abstractmethod
    async def users(self, names: Sequence[str]) -> dict[str, UserRecord]:
        """The registered users among `names` (unknown names are left out)."""

    @abc.abstractmethod
    async def contacts(self, users: Sequence[str]) -> dict[str, ContactsRecord]:
        """The contacts of each of `users` that has ever set any (the others
        are left out: they have none, and take rooms from anyone), in as
        few reads as the backend can."""

    @abc.abstractmethod
    async def put_contacts(
        self, user: str, record: ContactsRecord, expect: ContactsRecord | None
    ) -> None:
        """Replace `user`'s contacts with `record` if they are `expect` now
        (None: `user` never set any), else raise Conflict and change nothing.
        The caller checks the record (sorted, bounded, registered users)."""

    # --- rooms and membership ---------------------------------------------
    @abc.abstractmethod
    async def create_room(
        self,
        room: str,
        ops: Sequence[OpRecord],
        changes: Sequence[MemberChange],
        epoch: EpochRecord,
        packets: Sequence[PacketRecord],
    ) -> RoomRecord:
        """Create a room with its first ops (indexes 0..n-1), its members and
        epoch 0 with its key packets, atomically. Raises RoomExists."""

    @abc.abstractmethod
    async def append_op(
        self,
        room: str,
        op: OpRecord,
        changes: Sequence[MemberChange],
        epoch: EpochRecord | None = None,
        packets: Sequence[PacketRecord] = (),
    ) -> RoomRecord:
        """Append one op if op.index == op_head + 1 (else Conflict), apply the
        member changes, and optionally start `epoch` (which must be current+1,
        else Conflict) and store packets, all atomically. Raises NoSuchRoom."""

    @abc.abstractmethod
    async def add_epoch(
        self, room: str, epoch: EpochRecord, packets: Sequence[PacketRecord]
    ) -> RoomRecord:
        """Start a new epoch (must be current+1, else Conflict) with its key
        packets. Raises NoSuchRoom."""

    @abc.abstractmethod
    async def put_packets(self, room: str, packets: Sequence[PacketRecord]) -> int:
        """Store key packets of epochs the room has, without an op or a new
        epoch (history shared after an add); how many were stored. A packet
        whose (epoch, recipient) has one already is ignored: the first wins. Raises
        NoSuchRoom. The etcd store may write a long list in several
        transactions (each packet is stored once either way)."""

    @abc.abstractmethod
    async def room(self, room: str) -> RoomRecord | None:
        """The room's record, or None."""

    @abc.abstractmethod
    async def ops(self, room: str, after: int = -1, limit: int | None = None) -> list[OpRecord]:
        """Membership ops with index > after, in order (the first `limit`, if
        given). Raises NoSuchRoom."""

    @abc.abstractmethod
    async def members(self, room: str) -> dict[str, bool]:
        """Current members of the room -> is admin. Raises NoSuchRoom."""

    @abc.abstractmethod
    async def member_counts(self, rooms: Sequence[str]) -> dict[str, int]:
        """How many members each of `rooms` has now, in as few reads as the
        backend can (a room that does not exist is left out)."""

    @abc.abstractmethod
    async def room_counts(self, users: Sequence[str]) -> dict[str, int]:
        """How many rooms each of `users` is a member of now, in as few reads
        as the backend can (a user in none is left out)."""

    @abc.abstractmethod
    async def rooms_of(self, user: str) -> list[RoomRecord]:
        """The rooms `user` is currently a member of, sorted by room id."""

    @abc.abstractmethod
    async def key_packets(
        self, room: str, recipient: str, min_epoch: int = 0, limit: int | None = None
    ) -> list[PacketRecord]:
        """Key packets addressed to `recipient` in `room` with epoch >=
        min_epoch, by epoch (the first `limit`, if given). Raises NoSuchRoom."""

    # --- messages ---------------------------------------------------------
    @abc.abstractmethod
    async def append_messages(self, batch: Sequence[NewMessage]) -> list[Committed]:
        """Commit a batch of messages durably (one transaction, one fsync),
        each getting the next seq of its room (from 1) and a server timestamp
        in ms. Returns one Committed per input, in input order.

        A message whose (room, sender, txn) is already stored, or appears
        earlier in the same batch, is not stored again: its Committed carries
        the original seq/ts and duplicate=True. A message whose `expect` is
        not the room's (epoch, op_head) at the commit is not stored: its
        Committed has stale=True. Raises NoSuchRoom if any room is unknown
        (then nothing of the batch is stored).
        """

    def submit_messages(self, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        """`append_messages`, queued now: returns at once (no await) with the
        future of the acks. Batches submitted one after another are
        committed in that order, so a caller can queue a burst of sends
        without a task per send. Raises StoreUnavailable at once if the
        store is not open. The default runs `append_messages` in a task."""
        return asyncio.ensure_future(self.append_messages(batch))

    @abc.abstractmethod
    async def messages(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        max_bytes: int | None = None,
    ) -> list[StoredRow]:
        """Messages in ascending seq order: with `after`, the first `limit`
        with seq > after; with `before` (and no after), the last `limit` with
        seq < before; with neither, the last `limit`. With `max_bytes`, the
        read stops at the first row (in the order it reads: from `after` up,
        else from the newest down) whose envelope takes the page's envelopes
        past `max_bytes`, that row included, so a caller that cuts the page
        at that size reads little more than it keeps. Raises NoSuchRoom."""
