"""The etcd v3 backend of the store: the cluster's shared state.

What it is for: several chat nodes share users, rooms, membership logs,
epochs, key packets and message envelopes through one etcd cluster (Raft:
a write is acknowledged by etcd only once a quorum has it on disk).

How it works:

* gRPC (asyncio) straight to etcd's v3 API, with the protobuf messages and
  stubs that the `aetcd` package generates, through the member pool
  (pool.py: one channel per member, deadlines, penalties). TLS, client
  certificates and etcd authentication are conn.py's.
* Every key lives under a prefix (default ``/curvechat/``): keys.py, and the
  table in docs/operations.md.
* Every write is one etcd transaction guarded by compare-and-swap on the
  ``mod_revision`` of what it read (the room's head for messages, the room's
  meta for membership ops and epochs), retried when another node won.
* `append_messages` uses group commit like the SQLite store (the shared
  `curvechat.store.committer`): callers' batches are queued and each group
  is packed into transactions of at most
  ``max_txn_ops`` operations (etcd's --max-txn-ops, 128 by default), each
  CAS-ing the heads of the rooms it touches (messages.py). A caller is
  resolved only after the transaction holding its messages committed.
* Idempotency: ``i/<room>/<sender>/<txn>`` holds the original seq; it is
  written in the same transaction as the message, so a resend of the same
  (room, sender, txn) through ANY node finds it.

Deviations from the SQLite backend, all documented in docs/operations.md:
a single caller batch that needs more than ``max_txn_ops`` operations is
committed in several transactions (a failure between them leaves a prefix
stored; a resend with the same txn ids is then acked as duplicates). An etcd
call that times out may still have committed: it is reported as
StoreUnavailable (never as an ack), and idempotent resends make that safe.

What it must never do: import zmq, a UI or any crypto; interpret envelopes;
acknowledge a message before etcd committed it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import (
    ChangeTooLarge,
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
    StoredRow,
    StoreUnavailable,
    UserRecord,
)
from curvechat.store.committer import GroupCommitter
from curvechat.store.etcd import conn
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.keys import (
    DEFAULT_PREFIX,
    Keys,
    parse_etcd_url,
    prefix_end,
    q,
    tail,
    uq,
)
from curvechat.store.etcd.messages import MessageCommits
from curvechat.store.etcd.pool import MemberPool

__all__ = ["DEFAULT_PREFIX", "EtcdSecurity", "EtcdStore", "parse_etcd_url", "prefix_end"]

EtcdSecurity = conn.EtcdSecurity

_MAX_TXN_BYTES = 1024 * 1024  # below etcd's default --max-request-bytes (1.5 MiB)
_CAS_RETRIES = 200
_MSG_OVERHEAD = 200  # bytes counted per message on top of its envelope (keys, ids)

_enc = msgspec.msgpack.Encoder()


def _now_ms() -> int:
    return int(time.time() * 1000)


class EtcdStore(Keys, Store):
    """The `Store` on an etcd v3 cluster (see the module docstring).

    `endpoints` are ``host:port`` strings; `prefix` separates deployments (and
    tests) sharing one etcd. `timeout` bounds every etcd call: a cluster that
    lost quorum makes calls fail with StoreUnavailable after it. `security`:
    TLS and credentials (default plaintext, no user); etcd refusing them
    makes `open` raise StoreRefused.
    Counters: `commits` (message transactions committed), `committed_messages`,
    `cas_retries` (transactions lost to another writer and redone).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        max_txn_ops: int = 128,
        batch_max: int = 256,
        security: conn.EtcdSecurity | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        if max_txn_ops < 8:
            raise ValueError("max_txn_ops must be at least 8")
        Keys.__init__(self, prefix)
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.max_txn_ops = max_txn_ops
        self.batch_max = batch_max
        self.security = security
        self.pool = MemberPool(endpoints, prefix=self.prefix, timeout=timeout, security=security)
        self.commits = 0
        self.committed_messages = 0
        self.cas_retries = 0
        #: Written into every message this store commits, so that a node can
        #: tell its own commits from other nodes' in the watch.
        self.origin = ""
        self._messages = MessageCommits(self)
        self._committer = GroupCommitter(
            self._messages.commit_group, batch_max=batch_max, name="curvechat-etcd-commit"
        )

    # --- rpc helpers ------------------------------------------------------------
    def _require_open(self) -> None:
        self.pool.require_open()

    async def _call(self, method: str, request: Any) -> Any:
        return await self.pool.call(method, request)

    async def _txn(
        self, compares: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()
    ) -> Any:
        return await self._call(
            "Txn", rpc.TxnRequest(compare=compares, success=success, failure=failure)
        )

    async def _get(self, key: bytes) -> Any | None:
        resp = await self._call("Range", rpc.RangeRequest(key=key))
        return resp.kvs[0] if resp.kvs else None

    async def _range(self, key: bytes, end: bytes, **kw: Any) -> list[Any]:
        resp = await self._call("Range", rpc.RangeRequest(key=key, range_end=end, **kw))
        return list(resp.kvs)

    async def _read_txn(self, requests: Sequence[Any]) -> list[list[Any]]:
        """Several ranges read at one revision: a list of kvs per request."""
        resp = await self._txn([], [rpc.RequestOp(request_range=r) for r in requests])
        return [list(r.response_range.kvs) for r in resp.responses]

    async def _read_many(self, requests: Sequence[Any], group: int = 1) -> list[list[Any]]:
        """Like `_read_txn`, in as many transactions as max_txn_ops needs; each
        run of `group` consecutive requests stays in one (is read at one revision)."""
        step = max(1, self.max_txn_ops // group) * group
        out: list[list[Any]] = []
        for i in range(0, len(requests), step):
            out += await self._read_txn(requests[i : i + step])
        return out

    @staticmethod
    def _put(key: bytes, value: bytes) -> Any:
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))

    @staticmethod
    def _delete(key: bytes) -> Any:
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))

    @staticmethod
    def _mod_is(key: bytes, revision: int) -> Any:
        return rpc.Compare(
            key=key,
            result=rpc.Compare.CompareResult.EQUAL,
            target=rpc.Compare.CompareTarget.MOD,
            mod_revision=revision,
        )

    def _check_ops(self, n: int) -> None:
        if n > self.max_txn_ops:
            raise ChangeTooLarge(
                f"this change needs {n} operations in one etcd transaction, more than"
                f" {self.max_txn_ops} (the operator can raise etcd's --max-txn-ops and"
                " the node's --etcd-max-txn-ops)"
            )

    # --- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        if self.pool.members:
            return
        self.pool.connect()
        try:
            # Any member that answers will do; each failure moves on to the next.
            for _ in self.pool.members:
                try:
                    await self.ping()
                    break
                except StoreUnavailable:
                    if all(mb.avoid_until for mb in self.pool.members):
                        raise
        except BaseException:
            await self.pool.close()
            raise

    async def close(self) -> None:
        await self._committer.drain()
        await self.pool.close()

    async def ping(self) -> None:
        # A write, not a read: reads still work when etcd refuses writes (its
        # space quota exceeded, the NOSPACE alarm), and then so must the probe
        # fail. The key is outside the ranges the cluster watches.
        who = self.origin or "store"
        await self._call(
            "Put", rpc.PutRequest(key=self._k("health", who), value=str(_now_ms()).encode())
        )

    @property
    def stubs(self) -> tuple[Any, Any]:
        """(WatchStub, LeaseStub) to open a stream on (see MemberPool.stubs)."""
        return self.pool.stubs

    def stream_failed(self) -> None:
        self.pool.stream_failed()

    def member_channels(self) -> list[tuple[str, Any]]:
        """(endpoint, gRPC channel) of every member, for status.py."""
        return self.pool.channels()

    @property
    def login(self) -> conn.Login | None:
        """The etcd token, when the node logs in with a user and password."""
        return self.pool.login

    @property
    def probe(self) -> Any:
        """The node's health.EtcdProbe once it runs one (calls on a member it
        finds not serving give up at once)."""
        return self.pool.probe

    @probe.setter
    def probe(self, probe: Any) -> None:
        self.pool.probe = probe

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> None:
        """A plain put (the node registry uses it with a lease)."""
        await self._call("Put", rpc.PutRequest(key=key, value=value, lease=lease))

    async def get_prefix(self, prefix: bytes) -> list[Any]:
        """Every key-value under `prefix` (etcd KeyValue messages)."""
        return await self._range(prefix, prefix_end(prefix))

    async def current_revision(self) -> int:
        resp = await self._call("Range", rpc.RangeRequest(key=self._k("ping")))
        return int(resp.header.revision)

    # --- users -------------------------------------------------------------------
    async def register(self, user: str, sign_pub: bytes, transport_pub: bytes) -> None:
        uk, tk = self.k_user(user), self.k_transport(transport_pub)
        for _ in range(_CAS_RETRIES):
            ukv, tkv = await self._read_txn([rpc.RangeRequest(key=uk), rpc.RangeRequest(key=tk)])
            u = ukv[0] if ukv else None
            t = tkv[0] if tkv else None
            if u is not None and rec.user_dec.decode(u.value).sign_pub != bytes(sign_pub):
                raise NameTaken(user)
            if t is not None and t.value.decode() != user:
                raise KeyTaken("the transport key belongs to another user")
            puts = []
            if u is None:
                puts.append(self._put(uk, _enc.encode(rec.User(bytes(sign_pub), _now_ms()))))
            if t is None:
                puts.append(self._put(tk, user.encode()))
            if not puts:
                return
            resp = await self._txn(
                [
                    self._mod_is(uk, u.mod_revision if u else 0),
                    self._mod_is(tk, t.mod_revision if t else 0),
                ],
                puts,
            )
            if resp.succeeded:
                return
        raise StoreUnavailable("register: too much contention")

    async def user_for_transport(self, transport_pub: bytes) -> str | None:
        kv = await self._get(self.k_transport(transport_pub))
        return None if kv is None else str(kv.value.decode())

    async def users(self, names: Sequence[str]) -> dict[str, UserRecord]:
        wanted = list(dict.fromkeys(names))
        self._require_open()
        found: dict[str, UserRecord] = {}
        results = await self._read_many([rpc.RangeRequest(key=self.k_user(n)) for n in wanted])
        for name, kvs in zip(wanted, results, strict=True):
            if kvs:
                user = rec.user_dec.decode(kvs[0].value)
                found[name] = UserRecord(name, user.sign_pub, user.registered_ms)
        return found

    # --- rooms and membership --------------------------------------------------
    async def _room_state(self, room: str) -> tuple[Any, Any] | None:
        """(meta kv, head kv) read at one revision, or None."""
        meta, head = await self._read_txn(
            [rpc.RangeRequest(key=self.k_meta(room)), rpc.RangeRequest(key=self.k_head(room))]
        )
        if not meta or not head:
            return None
        return meta[0], head[0]

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
            out.append(self._put(key, _enc.encode((p.sender, p.box))))
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
        if [op.index for op in ops] != list(range(len(ops))):
            raise ValueError("create_room takes ops indexed 0..n-1")
        if epoch.epoch != 0:
            raise ValueError("create_room starts epoch 0")
        _check_packets(room, packets)
        self._require_open()
        record = RoomRecord(
            room=room,
            head=0,
            epoch=0,
            epoch_after_op=epoch.after_op,
            op_head=len(ops) - 1,
            created_ms=_now_ms(),
        )
        meta = rec.Meta(record.epoch, record.epoch_after_op, record.op_head, record.created_ms)
        # A new room has no packets yet: keep the first of any duplicates.
        first: dict[tuple[str, int], PacketRecord] = {}
        for p in packets:
            first.setdefault((p.recipient, p.epoch), p)
        writes = [
            self._put(self.k_meta(room), _enc.encode(meta)),
            self._put(self.k_head(room), _enc.encode(rec.Head(0, 0))),
            self._put(self.k_epoch(room, 0), _enc.encode((epoch.after_op, epoch.creator))),
            *(self._put(self.k_op(room, o.index), _enc.encode((o.op, o.sig))) for o in ops),
            *self._member_ops(room, changes),
            *(
                self._put(self.k_packet(room, p.recipient, p.epoch), _enc.encode((p.sender, p.box)))
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
        for _ in range(_CAS_RETRIES):
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
                writes.append(self._put(self.k_op(room, op.index), _enc.encode((op.op, op.sig))))
            writes += self._member_ops(room, changes)
            if epoch is not None:
                new_epoch, after_op = epoch.epoch, epoch.after_op
                writes.append(
                    self._put(
                        self.k_epoch(room, epoch.epoch),
                        _enc.encode((epoch.after_op, epoch.creator)),
                    )
                )
            writes += await self._packet_ops(room, packets)
            op_head = op.index if op is not None else current.op_head
            meta = rec.Meta(new_epoch, after_op, op_head, current.created_ms)
            writes.append(self._put(self.k_meta(room), _enc.encode(meta)))
            self._check_ops(len(writes))
            resp = await self._txn([self._mod_is(self.k_meta(room), meta_kv.mod_revision)], writes)
            if resp.succeeded:
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
        _check_packets(room, packets)
        self._require_open()
        return await self._change_room(room, op, changes, epoch, packets)

    async def add_epoch(
        self, room: str, epoch: EpochRecord, packets: Sequence[PacketRecord]
    ) -> RoomRecord:
        packets = tuple(packets)
        _check_packets(room, packets)
        self._require_open()
        return await self._change_room(room, None, (), epoch, packets)

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

    async def _room_range(self, room: str, sub: bytes, start: bytes | None = None) -> list[Any]:
        """The kvs under one of the room's sub-prefixes (from `start`, if given)."""
        (kvs,) = await self._room_read(
            room, rpc.RangeRequest(key=start or sub, range_end=prefix_end(sub))
        )
        return kvs

    async def ops(self, room: str, after: int = -1) -> list[OpRecord]:
        sub = self._k("r", q(room), "op", "")
        kvs = await self._room_range(room, sub, self.k_op(room, max(after + 1, 0)))
        return [OpRecord(int(tail(kv.key)), *rec.op_dec.decode(kv.value)) for kv in kvs]

    async def members(self, room: str) -> dict[str, bool]:
        kvs = await self._room_range(room, self._k("r", q(room), "mem", ""))
        return {uq(tail(kv.key)): kv.value == b"1" for kv in kvs}

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
        self, room: str, recipient: str, min_epoch: int = 0
    ) -> list[PacketRecord]:
        sub = self._k("r", q(room), "pk", q(recipient), "")
        kvs = await self._room_range(room, sub, self.k_packet(room, recipient, max(min_epoch, 0)))
        return [
            PacketRecord(room, int(tail(kv.key)), recipient, *rec.packet_dec.decode(kv.value))
            for kv in kvs
        ]

    # --- messages ----------------------------------------------------------------
    async def append_messages(self, batch: Sequence[NewMessage]) -> list[Committed]:
        return await self.submit_messages(batch)

    def submit_messages(self, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        self._require_open()
        if not batch:
            done: asyncio.Future[list[Committed]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return self._committer.submit(batch)

    async def messages(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[StoredRow]:
        sub = self._k("m", q(room), "")
        start, end = sub, prefix_end(sub)
        if after is not None:
            start = self.k_msg(room, max(after + 1, 0))
        if before is not None:
            end = self.k_msg(room, max(before, 0))
        if limit <= 0 or start >= end:
            await self._room_read(room)  # NoSuchRoom, or nothing to read
            return []
        descending = after is None
        req = rpc.RangeRequest(
            key=start,
            range_end=end,
            limit=limit,
            sort_order=(
                rpc.RangeRequest.SortOrder.DESCEND
                if descending
                else rpc.RangeRequest.SortOrder.ASCEND
            ),
            sort_target=rpc.RangeRequest.SortTarget.KEY,
        )
        (kvs,) = await self._room_read(room, req)
        rows = [self.decode_message(*self.parse_msg_key(kv.key), kv.value)[0] for kv in kvs]
        return rows[::-1] if descending else rows


def _check_packets(room: str, packets: Sequence[PacketRecord]) -> None:
    for packet in packets:
        if packet.room != room:
            raise ValueError(f"a key packet for room {packet.room!r} given for room {room!r}")
