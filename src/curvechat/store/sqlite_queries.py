"""The SQLite store's statements, apart from the group append: users,
contacts, rooms, membership, key packets and reading messages.

Each function takes the store's connection and does one `Store` call's work
in one transaction; `curvechat.store.sqlite.SQLiteStore` runs them on its
thread and checks the caller's input before.

What it must never do: run on the event loop's thread; interpret ops,
envelopes or key packets (opaque bytes); change a room's row without the
store telling the group append (`GroupAppender.forget`); write messages (the
group append does, `curvechat.store.sqlite_append`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from curvechat.store.base import (
    Conflict,
    ContactsRecord,
    EpochRecord,
    KeyTaken,
    MemberChange,
    NameTaken,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    StoredRow,
    UserRecord,
)
from curvechat.store.sqlite_schema import transaction

_ROOM_COLS = "room, head, epoch, epoch_after_op, op_head, created_ms"
_MSG_COLS = "room, seq, ts_ms, sender, txn, envelope"
_IN_CHUNK = 500  # names per "IN (...)" query, well below SQLite's variable limit
_contacts_enc = msgspec.msgpack.Encoder()
_contacts_dec = msgspec.msgpack.Decoder(ContactsRecord)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _room_record(row: Any) -> RoomRecord:
    return RoomRecord(
        room=row[0],
        head=row[1],
        epoch=row[2],
        epoch_after_op=row[3],
        op_head=row[4],
        created_ms=row[5],
    )


def get_room(conn: sqlite3.Connection, room: str) -> RoomRecord | None:
    row = conn.execute(f"SELECT {_ROOM_COLS} FROM rooms WHERE room = ?", (room,)).fetchone()
    return None if row is None else _room_record(row)


def _require_room(conn: sqlite3.Connection, room: str) -> RoomRecord:
    record = get_room(conn, room)
    if record is None:
        raise NoSuchRoom(room)
    return record


def _apply_changes(conn: sqlite3.Connection, room: str, changes: Sequence[MemberChange]) -> None:
    for change in changes:
        if change.present:
            conn.execute(
                "INSERT INTO members (room, user, admin) VALUES (?, ?, ?)"
                " ON CONFLICT (room, user) DO UPDATE SET admin = excluded.admin",
                (room, change.user, int(change.admin)),
            )
        else:
            conn.execute("DELETE FROM members WHERE room = ? AND user = ?", (room, change.user))


def _insert_epoch(conn: sqlite3.Connection, room: str, epoch: EpochRecord) -> None:
    conn.execute(
        "INSERT INTO epochs (room, epoch, after_op, creator) VALUES (?, ?, ?, ?)",
        (room, epoch.epoch, epoch.after_op, epoch.creator),
    )


def _insert_packets(conn: sqlite3.Connection, packets: Sequence[PacketRecord]) -> int:
    # The first packet for (room, epoch, recipient) wins; later ones are ignored.
    return conn.executemany(
        "INSERT INTO packets (room, epoch, recipient, sender, box) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (room, epoch, recipient) DO NOTHING",
        [(p.room, p.epoch, p.recipient, p.sender, p.box) for p in packets],
    ).rowcount


# --- users -------------------------------------------------------------------
def register(conn: sqlite3.Connection, user: str, sign_pub: bytes, transport_pub: bytes) -> None:
    def body() -> None:
        row = conn.execute("SELECT sign_pub FROM users WHERE user = ?", (user,)).fetchone()
        if row is not None and bytes(row[0]) != bytes(sign_pub):
            raise NameTaken(user)
        owner = conn.execute(
            "SELECT user FROM transports WHERE key = ?", (transport_pub,)
        ).fetchone()
        if owner is not None and owner[0] != user:
            raise KeyTaken("the transport key belongs to another user")
        if row is None:
            conn.execute(
                "INSERT INTO users (user, sign_pub, registered_ms) VALUES (?, ?, ?)",
                (user, sign_pub, _now_ms()),
            )
        if owner is None:
            conn.execute("INSERT INTO transports (key, user) VALUES (?, ?)", (transport_pub, user))

    transaction(conn, body)


def user_for_transport(conn: sqlite3.Connection, transport_pub: bytes) -> str | None:
    row = conn.execute("SELECT user FROM transports WHERE key = ?", (transport_pub,)).fetchone()
    return None if row is None else str(row[0])


def _rows_in(conn: sqlite3.Connection, sql: str, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """The rows of `sql` (whose "{}" is the list of "?" for "IN ({})") for
    all of `names`, _IN_CHUNK names a query."""
    for i in range(0, len(names), _IN_CHUNK):
        chunk = names[i : i + _IN_CHUNK]
        yield from conn.execute(sql.format(", ".join("?" * len(chunk))), chunk)


def users(conn: sqlite3.Connection, wanted: Sequence[str]) -> dict[str, UserRecord]:
    def body() -> dict[str, UserRecord]:
        found: dict[str, UserRecord] = {}
        sql = "SELECT user, sign_pub, registered_ms FROM users WHERE user IN ({})"
        for row in _rows_in(conn, sql, wanted):
            found[row[0]] = UserRecord(row[0], row[1], row[2])
        return found

    return transaction(conn, body, write=False)


# --- contacts ------------------------------------------------------------------
def contacts(conn: sqlite3.Connection, users: Sequence[str]) -> dict[str, ContactsRecord]:
    def body() -> dict[str, ContactsRecord]:
        sql = "SELECT user, value FROM contacts WHERE user IN ({})"
        return {row[0]: _contacts_dec.decode(row[1]) for row in _rows_in(conn, sql, users)}

    return transaction(conn, body, write=False)


def put_contacts(
    conn: sqlite3.Connection, user: str, record: ContactsRecord, expect: ContactsRecord | None
) -> None:
    def body() -> None:
        row = conn.execute("SELECT value FROM contacts WHERE user = ?", (user,)).fetchone()
        # The encodings compared, as the etcd store does: one encoder, one encoding.
        now = None if row is None else bytes(row[0])
        if now != (None if expect is None else _contacts_enc.encode(expect)):
            raise Conflict(f"the contacts of {user!r} changed")
        conn.execute(
            "INSERT OR REPLACE INTO contacts (user, value) VALUES (?, ?)",
            (user, _contacts_enc.encode(record)),
        )

    transaction(conn, body)


# --- rooms and membership --------------------------------------------------------
def create_room(
    conn: sqlite3.Connection,
    room: str,
    ops: Sequence[OpRecord],
    changes: Sequence[MemberChange],
    epoch: EpochRecord,
    packets: Sequence[PacketRecord],
) -> RoomRecord:
    def body() -> RoomRecord:
        if get_room(conn, room) is not None:
            raise RoomExists(room)
        record = RoomRecord(
            room=room,
            head=0,
            epoch=epoch.epoch,
            epoch_after_op=epoch.after_op,
            op_head=len(ops) - 1,
            created_ms=_now_ms(),
        )
        conn.execute(
            f"INSERT INTO rooms ({_ROOM_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.room,
                record.head,
                record.epoch,
                record.epoch_after_op,
                record.op_head,
                record.created_ms,
            ),
        )
        conn.executemany(
            "INSERT INTO ops (room, idx, op, sig) VALUES (?, ?, ?, ?)",
            [(room, op.index, op.op, op.sig) for op in ops],
        )
        _apply_changes(conn, room, changes)
        _insert_epoch(conn, room, epoch)
        _insert_packets(conn, packets)
        return record

    return transaction(conn, body)


def change_room(
    conn: sqlite3.Connection,
    room: str,
    op: OpRecord | None,
    changes: Sequence[MemberChange],
    epoch: EpochRecord | None,
    packets: Sequence[PacketRecord],
) -> RoomRecord:
    """`append_op` (with `op`) or `add_epoch` (without, with `epoch`)."""

    def body() -> RoomRecord:
        current = _require_room(conn, room)
        op_head = current.op_head
        if op is not None:
            if op.index != current.op_head + 1:
                raise Conflict(f"op index {op.index}, expected {current.op_head + 1}")
            op_head = op.index
        if epoch is not None and epoch.epoch != current.epoch + 1:
            raise Conflict(f"epoch {epoch.epoch}, expected {current.epoch + 1}")
        if op is not None:
            conn.execute(
                "INSERT INTO ops (room, idx, op, sig) VALUES (?, ?, ?, ?)",
                (room, op.index, op.op, op.sig),
            )
        _apply_changes(conn, room, changes)
        new_epoch, after_op = current.epoch, current.epoch_after_op
        if epoch is not None:
            _insert_epoch(conn, room, epoch)
            new_epoch, after_op = epoch.epoch, epoch.after_op
        _insert_packets(conn, packets)
        conn.execute(
            "UPDATE rooms SET op_head = ?, epoch = ?, epoch_after_op = ? WHERE room = ?",
            (op_head, new_epoch, after_op, room),
        )
        return msgspec.structs.replace(
            current, epoch=new_epoch, epoch_after_op=after_op, op_head=op_head
        )

    return transaction(conn, body)


def put_packets(conn: sqlite3.Connection, room: str, packets: Sequence[PacketRecord]) -> int:
    """`put_packets`: the room's row is not changed."""

    def body() -> int:
        _require_room(conn, room)
        return _insert_packets(conn, packets)

    return transaction(conn, body)


def ops(
    conn: sqlite3.Connection, room: str, after: int, limit: int | None = None
) -> list[OpRecord]:
    def body() -> list[OpRecord]:
        _require_room(conn, room)
        rows = conn.execute(
            "SELECT idx, op, sig FROM ops WHERE room = ? AND idx > ? ORDER BY idx LIMIT ?",
            (room, after, -1 if limit is None else limit),
        )
        return [OpRecord(r[0], r[1], r[2]) for r in rows]

    return transaction(conn, body, write=False)


def member_counts(conn: sqlite3.Connection, rooms: list[str]) -> dict[str, int]:
    def body() -> dict[str, int]:
        sql = "SELECT room, COUNT(*) FROM members WHERE room IN ({}) GROUP BY room"
        return {r[0]: int(r[1]) for r in _rows_in(conn, sql, rooms)}

    return transaction(conn, body, write=False)


def room_counts(conn: sqlite3.Connection, users: list[str]) -> dict[str, int]:
    def body() -> dict[str, int]:
        sql = "SELECT user, COUNT(*) FROM members WHERE user IN ({}) GROUP BY user"
        return {r[0]: int(r[1]) for r in _rows_in(conn, sql, users)}

    return transaction(conn, body, write=False)


def members(conn: sqlite3.Connection, room: str) -> dict[str, bool]:
    def body() -> dict[str, bool]:
        _require_room(conn, room)
        rows = conn.execute("SELECT user, admin FROM members WHERE room = ? ORDER BY user", (room,))
        return {r[0]: bool(r[1]) for r in rows}

    return transaction(conn, body, write=False)


def rooms_of(conn: sqlite3.Connection, user: str) -> list[RoomRecord]:
    cols = ", ".join(f"r.{c.strip()}" for c in _ROOM_COLS.split(","))
    rows = conn.execute(
        f"SELECT {cols} FROM members m JOIN rooms r ON r.room = m.room"
        " WHERE m.user = ? ORDER BY r.room",
        (user,),
    )
    return [_room_record(r) for r in rows]


def key_packets(
    conn: sqlite3.Connection, room: str, recipient: str, min_epoch: int, limit: int | None = None
) -> list[PacketRecord]:
    def body() -> list[PacketRecord]:
        _require_room(conn, room)
        rows = conn.execute(
            "SELECT room, epoch, recipient, sender, box FROM packets"
            " WHERE room = ? AND recipient = ? AND epoch >= ? ORDER BY epoch LIMIT ?",
            (room, recipient, min_epoch, -1 if limit is None else limit),
        )
        return [PacketRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    return transaction(conn, body, write=False)


# --- messages --------------------------------------------------------------------
def messages(
    conn: sqlite3.Connection,
    room: str,
    after: int | None,
    before: int | None,
    limit: int,
    max_bytes: int | None = None,
) -> list[StoredRow]:
    def body() -> list[StoredRow]:
        _require_room(conn, room)
        if limit <= 0:
            return []
        select = f"SELECT {_MSG_COLS} FROM messages WHERE room = ?"
        args: tuple[int, ...]
        if after is not None and before is not None:
            sql, args = f"{select} AND seq > ? AND seq < ? ORDER BY seq LIMIT ?", (after, before)
        elif after is not None:
            sql, args = f"{select} AND seq > ? ORDER BY seq LIMIT ?", (after,)
        elif before is not None:
            sql, args = f"{select} AND seq < ? ORDER BY seq DESC LIMIT ?", (before,)
        else:
            sql, args = f"{select} ORDER BY seq DESC LIMIT ?", ()
        rows = []
        size = 0
        # Row by row: a page cut at `max_bytes` does not read what it cuts.
        for r in conn.execute(sql, (room, *args, limit)):
            rows.append(StoredRow(r[0], r[1], r[2], r[3], r[4], r[5]))
            size += len(r[5])
            if max_bytes is not None and size > max_bytes:
                break
        return rows if after is not None else rows[::-1]

    return transaction(conn, body, write=False)
