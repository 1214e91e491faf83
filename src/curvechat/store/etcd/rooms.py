"""The etcd store's rooms and membership: creating a room, appending a
membership op or an epoch (each one transaction, compare-and-swap on the
room's meta, retried when another node won), key packets shared after an
add (each put only while its key is absent), and the reads of a room's
record, ops, members and key packets (each at one revision with the
room's meta, so a room that does not exist is NoSuchRoom).

What it must never do: write a room's meta without comparing it, or store
a second key packet for a (recipient, epoch) that has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import (
    Conflict,
    EpochRecord,
    MemberChange,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    StoreUnavailable,
    check_new_room,
    check_packets,
)
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.client import CAS_RETRIES, EtcdClient, now_ms
from curvechat.store.etcd.keys import prefix_end, q, tail, uq

_GREATER = rpc.Compare.CompareResult.GREATER


class EtcdRooms(EtcdClient):
    """The rooms half of `EtcdStore` (see store.py for the whole)."""

    async def _room_state(self, room: str) -> tuple[Any, Any] | None:
        """(meta kv, head kv) read at one revision, or None."""
        meta, head = await self._read_txn(
            [rpc.RangeRequest(key=self.k_meta(room)), rpc.RangeRequest(key=self.k_head(room))]
        )
        if not meta or not head:
            return None
        return meta[0], head[0]

    def _meta_written(self, room: str, was: int, meta: tuple[int, int], revision: int) -> None:
        """This store moved `room`'s meta from revision `was` to (epoch,
        op_head) `meta` at `revision` (store.py tells its message commits)."""

    @staticmethod
    def _record(room: str, meta_kv: Any, head_kv: Any) -> RoomRecord:
        meta = rec.meta_dec.decode(meta_kv.value)
        head = rec.head_dec.decode(head_kv.value)
        return RoomRecord(
            room=room,
            head=head.head,
            epoch=meta.epoch,
            epoch_after_op=meta.epoch_after_op,
            op_head=meta.op_head,
            created_ms=meta.created_ms,
        )

    def _member_ops(self, room: str, changes: Iterable[MemberChange]) -> list[Any]:
        out = []
        for c in changes:
            if c.present:
                out.append(self._put(self.k_member(room, c.user), b"1" if c.admin else b"0"))
                out.append(self._put(self.k_rooms_of(c.user, room), b""))
            else:
                out.append(self._delete(self.k_member(room, c.user)))
                out.append(self._delete(self.k_rooms_of(c.user, room)))
        return out

    async def _packet_ops(self, room: str, packets: Sequence[PacketRecord]) -> list[Any]:
        """Puts for the packets not stored yet (the first packet for a key wins)."""
        if not packets:
            return []
        keys = list(dict.fromkeys(self.k_packet(room, p.recipient, p.epoch) for p in packets))
        got = await self._read_many([rpc.RangeRequest(key=k, keys_only=True) for k in keys])
        existing = {k for k, kvs in zip(keys, got, strict=True) if kvs}
        out = []
        for p in packets:
            key = self.k_packet(room, p.recipient, p.epoch)
            if key in existing:
                continue
            existing.add(key)
            out.append(self._put(key, rec.enc.encode((p.sender, p.box))))
        return out

    async def create_room(
        self,
        room: str,
        ops: Sequence[OpRecord],
        changes: Sequence[MemberChange],
        epoch: EpochRecord,
        packets: Sequence[PacketRecord],
    ) -> RoomRecord:
        ops, changes, packets = tuple(ops), tuple(changes), tuple(packets)
        check_new_room(room, ops, epoch, packets)
        self._require_open()
        record = RoomRecord(
            room=room,
            head=0,
            epoch=0,
            epoch_after_op=epoch.after_op,
            op_head=len(ops) - 1,
            created_ms=now_ms(),
        )
        meta = rec.Meta(record.epoch, record.epoch_after_op, record.op_head, record.created_ms)
        # A new room has no packets yet: keep the first of any duplicates.
        first: dict[tuple[str, int], PacketRecord] = {}
        for p in packets:
            first.setdefault((p.recipient, p.epoch), p)
        writes = [
            self._put(self.k_meta(room), rec.enc.encode(meta)),
            self._put(self.k_head(room), rec.enc.encode(rec.Head(0, 0))),
            self._put(self.k_epoch(room, 0), rec.enc.encode((epoch.after_op, epoch.creator))),
            *(self._put(self.k_op(room, o.index), rec.enc.encode((o.op, o.sig))) for o in ops),
            *self._member_ops(room, changes),
            *(
                self._put(
                    self.k_packet(room, p.recipient, p.epoch), rec.enc.encode((p.sender, p.box))
                )
                for p in first.values()
            ),
        ]
        self._check_ops(len(writes))
        resp = await self._txn([self._mod_is(self.k_meta(room), 0)], writes)
        if not resp.succeeded:
            raise RoomExists(room)
        return record

    async def _change_room(
        self,
        room: str,
        op: OpRecord | None,
        changes: Sequence[MemberChange],
        epoch: EpochRecord | None,
        packets: Sequence[PacketRecord],
    ) -> RoomRecord:
        for _ in range(CAS_RETRIES):
            state = await self._room_state(room)
            if state is None:
                raise NoSuchRoom(room)
            meta_kv, head_kv = state
            current = self._record(room, meta_kv, head_kv)
            if op is not None and op.index != current.op_head + 1:
                raise Conflict(f"op index {op.index}, expected {current.op_head + 1}")
            if epoch is not None and epoch.epoch != current.epoch + 1:
                raise Conflict(f"epoch {epoch.epoch}, expected {current.epoch + 1}")
            new_epoch, after_op = current.epoch, current.epoch_after_op
            writes: list[Any] = []
            if op is not None:
                writes.append(self._put(self.k_op(room, op.index), rec.enc.encode((op.op, op.sig))))
            writes += self._member_ops(room, changes)
            if epoch is not None:
                new_epoch, after_op = epoch.epoch, epoch.after_op
                writes.append(
                    self._put(
                        self.k_epoch(room, epoch.epoch),
                        rec.enc.encode((epoch.after_op, epoch.creator)),
                    )
                )
            writes += await self._packet_ops(room, packets)
            op_head = op.index if op is not None else current.op_head
            meta = rec.Meta(new_epoch, after_op, op_head, current.created_ms)
            writes.append(self._put(self.k_meta(room), rec.enc.encode(meta)))
            self._check_ops(len(writes))
            resp = await self._txn([self._mod_is(self.k_meta(room), meta_kv.mod_revision)], writes)
            if resp.succeeded:
                self._meta_written(
                    room, int(meta_kv.mod_revision), (new_epoch, op_head), int(resp.header.revision)
                )
                return msgspec.structs.replace(
                    current, epoch=new_epoch, epoch_after_op=after_op, op_head=op_head
                )
        raise StoreUnavailable("too much contention on the room")

    async def append_op(
        self,
        room: str,
        op: OpRecord,
        changes: Sequence[MemberChange],
        epoch: EpochRecord | None = None,
        packets: Sequence[PacketRecord] = (),
    ) -> RoomRecord:
        changes, packets = tuple(changes), tuple(packets)
        check_packets(room, packets)
        self._require_open()
        return await self._change_room(room, op, changes, epoch, packets)

    async def add_epoch(
        self, room: str, epoch: EpochRecord, packets: Sequence[PacketRecord]
    ) -> RoomRecord:
        packets = tuple(packets)
        check_packets(room, packets)
        self._require_open()
        return await self._change_room(room, None, (), epoch, packets)

    async def put_packets(self, room: str, packets: Sequence[PacketRecord]) -> int:
        """A transaction per `max_txn_ops - 1` packets, each put only while
        its key is absent and the room's meta present (a lost compare reads
        which keys exist now, and tries again without them)."""
        packets = tuple(packets)
        check_packets(room, packets)
        self._require_open()
        first: dict[bytes, PacketRecord] = {}
        for p in packets:
            first.setdefault(self.k_packet(room, p.recipient, p.epoch), p)
        todo = list(first.items())
        step = self.max_txn_ops - 1
        stored = 0
        for start in range(0, len(todo), step):
            chunk = dict(todo[start : start + step])
            for _ in range(CAS_RETRIES):
                meta, *got = await self._read_txn(
                    [
                        rpc.RangeRequest(key=self.k_meta(room), keys_only=True),
                        *(rpc.RangeRequest(key=k, keys_only=True) for k in chunk),
                    ]
                )
                if not meta:
                    raise NoSuchRoom(room)
                for key, kvs in zip(list(chunk), got, strict=True):
                    if kvs:
                        del chunk[key]
                if not chunk:
                    break
                compares = [self._version_is(self.k_meta(room), 0, _GREATER)]
                compares += [self._version_is(k, 0) for k in chunk]
                writes = [self._put(k, rec.enc.encode((p.sender, p.box))) for k, p in chunk.items()]
                if (await self._txn(compares, writes)).succeeded:
                    stored += len(chunk)
                    break
            else:
                raise StoreUnavailable("too much contention on the room's key packets")
        return stored

    async def room(self, room: str) -> RoomRecord | None:
        state = await self._room_state(room)
        return None if state is None else self._record(room, *state)

    async def _room_read(self, room: str, *requests: Any) -> list[list[Any]]:
        """The kvs of each request, read with the room's meta at one revision;
        NoSuchRoom if the room does not exist."""
        meta, *got = await self._read_txn(
            [rpc.RangeRequest(key=self.k_meta(room), keys_only=True), *requests]
        )
        if not meta:
            raise NoSuchRoom(room)
        return got

    async def _room_range(
        self, room: str, sub: bytes, start: bytes | None = None, limit: int | None = None
    ) -> list[Any]:
        """The kvs under one of the room's sub-prefixes (from `start`, if
        given; the first `limit`, if given)."""
        (kvs,) = await self._room_read(
            room, rpc.RangeRequest(key=start or sub, range_end=prefix_end(sub), limit=limit or 0)
        )
        return kvs

    async def ops(self, room: str, after: int = -1, limit: int | None = None) -> list[OpRecord]:
        if limit is not None and limit <= 0:
            await self._room_read(room)  # NoSuchRoom, or nothing to read
            return []
        sub = self._k("r", q(room), "op", "")
        kvs = await self._room_range(room, sub, self.k_op(room, max(after + 1, 0)), limit)
        return [OpRecord(int(tail(kv.key)), *rec.op_dec.decode(kv.value)) for kv in kvs]

    async def members(self, room: str) -> dict[str, bool]:
        kvs = await self._room_range(room, self._k("r", q(room), "mem", ""))
        return {uq(tail(kv.key)): kv.value == b"1" for kv in kvs}

    async def member_counts(self, rooms: Sequence[str]) -> dict[str, int]:
        subs = [self._k("r", q(room), "mem", "") for room in rooms]
        got = await self._read_many(
            [rpc.RangeRequest(key=s, range_end=prefix_end(s), keys_only=True) for s in subs]
        )
        return {room: len(kvs) for room, kvs in zip(rooms, got, strict=True) if kvs}

    async def room_counts(self, users: Sequence[str]) -> dict[str, int]:
        subs = [self._k("u", q(user), "rooms", "") for user in users]
        counts = await self._count_many(
            [rpc.RangeRequest(key=s, range_end=prefix_end(s), count_only=True) for s in subs]
        )
        return {user: n for user, n in zip(users, counts, strict=True) if n}

    async def rooms_of(self, user: str) -> list[RoomRecord]:
        sub = self._k("u", q(user), "rooms", "")
        kvs = await self._range(sub, prefix_end(sub), keys_only=True)
        names = sorted(uq(tail(kv.key)) for kv in kvs)
        got = await self._read_many(
            [rpc.RangeRequest(key=k) for n in names for k in (self.k_meta(n), self.k_head(n))],
            group=2,
        )
        out = []
        for j, n in enumerate(names):
            meta, head = got[2 * j], got[2 * j + 1]
            if meta and head:
                out.append(self._record(n, meta[0], head[0]))
        return out

    async def key_packets(
        self, room: str, recipient: str, min_epoch: int = 0, limit: int | None = None
    ) -> list[PacketRecord]:
        if limit is not None and limit <= 0:
            await self._room_read(room)  # NoSuchRoom, or nothing to read
            return []
        sub = self._k("r", q(room), "pk", q(recipient), "")
        start = self.k_packet(room, recipient, max(min_epoch, 0))
        kvs = await self._room_range(room, sub, start, limit)
        return [
            PacketRecord(room, int(tail(kv.key)), recipient, *rec.packet_dec.decode(kv.value))
            for kv in kvs
        ]
