"""The values the etcd store writes, as msgpack arrays (docs/operations.md
has the key layout they live under).

What it must never do: change a field's position (the cluster's data is
read back by every node, old and new).
"""

from __future__ import annotations

import msgspec


class Meta(msgspec.Struct, array_like=True, frozen=True):
    """``r/<room>/meta``: the room's epoch and membership-log head."""

    epoch: int
    epoch_after_op: int
    op_head: int
    created_ms: int


class Head(msgspec.Struct, array_like=True, frozen=True):
    """``r/<room>/head``: the room's last seq and the timestamp it carries."""

    head: int
    last_ts: int


class Msg(msgspec.Struct, array_like=True, frozen=True):
    """``m/<room>/<seq>``: one message, as stores before message runs wrote
    it (still read: a run of one)."""

    ts_ms: int
    sender: str
    txn: str
    envelope: bytes
    origin: str = ""  # the boot id of the node that committed it


class Run(msgspec.Struct, array_like=True, frozen=True):
    """``m/<room>/<last seq>``: the messages `first` … `last seq` of a room,
    committed in one transaction by one node (`origin`, its boot id; the
    last field: the cluster feed tells a node's own runs by their value's
    tail). Each message is ``(ts_ms, sender, txn, envelope)``."""

    first: int
    msgs: list[tuple[int, str, str, bytes]]
    origin: str


class User(msgspec.Struct, array_like=True, frozen=True):
    """``u/<user>/id``."""

    sign_pub: bytes
    registered_ms: int


class Contacts(msgspec.Struct, array_like=True, frozen=True):
    """``c/<user>``: the user's contacts (`ContactsRecord`). A write compares
    the stored bytes with the encoding of what the writer read: `enc` gives
    a record one encoding (`users` is sorted, without repeats)."""

    only: bool
    users: tuple[str, ...]


enc = msgspec.msgpack.Encoder()
meta_dec = msgspec.msgpack.Decoder(Meta)
head_dec = msgspec.msgpack.Decoder(Head)
msg_dec = msgspec.msgpack.Decoder(Msg)
run_dec = msgspec.msgpack.Decoder(Run)
user_dec = msgspec.msgpack.Decoder(User)
contacts_dec = msgspec.msgpack.Decoder(Contacts)
op_dec = msgspec.msgpack.Decoder(tuple[bytes, bytes])
epoch_dec = msgspec.msgpack.Decoder(tuple[int, str])
packet_dec = msgspec.msgpack.Decoder(tuple[str, bytes])
seqts_dec = msgspec.msgpack.Decoder(tuple[int, int])
