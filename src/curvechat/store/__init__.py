"""Persistence for the server: one async interface (`Store`), several backends.

Never imports zmq, textual or the server: a store is usable on its own.
"""

from curvechat.store.base import (
    ChangeTooLarge,
    Committed,
    Conflict,
    ContactsRecord,
    EpochRecord,
    KeyTaken,
    MemberChange,
    NameTaken,
    NewMessage,
    NodeNameTaken,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    Store,
    StoredRow,
    StoreError,
    StoreFull,
    StoreRefused,
    StoreUnavailable,
    UserRecord,
)
from curvechat.store.sqlite import SQLiteStore

__all__ = [
    "ChangeTooLarge",
    "Committed",
    "Conflict",
    "ContactsRecord",
    "EpochRecord",
    "KeyTaken",
    "MemberChange",
    "NameTaken",
    "NewMessage",
    "NoSuchRoom",
    "NodeNameTaken",
    "OpRecord",
    "PacketRecord",
    "RoomExists",
    "RoomRecord",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreFull",
    "StoreRefused",
    "StoreUnavailable",
    "StoredRow",
    "UserRecord",
]
