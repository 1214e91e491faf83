"""Persistence for the server: one async interface (`Store`), several backends.

Never imports zmq, textual or the server: a store is usable on its own.
"""

from curvechat.store.base import (
    Committed,
    Conflict,
    EpochRecord,
    KeyTaken,
    MemberChange,
    NameTaken,
    NewMessage,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    Store,
    StoreError,
    StoredRow,
    StoreUnavailable,
    UserRecord,
)

__all__ = [
    "Committed",
    "Conflict",
    "EpochRecord",
    "KeyTaken",
    "MemberChange",
    "NameTaken",
    "NewMessage",
    "NoSuchRoom",
    "OpRecord",
    "PacketRecord",
    "RoomExists",
    "RoomRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredRow",
    "UserRecord",
]
