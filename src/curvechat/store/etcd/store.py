"""The etcd v3 backend of the store: the cluster's shared state.

What it is for: several chat nodes share users, their contacts, rooms,
membership logs, epochs, key packets and message envelopes through one
etcd cluster (Raft: a write is acknowledged by etcd only once a quorum has
it on disk).

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
  `put_contacts` compares the value it was given instead (the caller's
  read) and is not retried: a Conflict goes back to the caller.
* `append_messages` uses group commit like the SQLite store (the shared
  `curvechat.store.committer`): callers' batches are queued and each group
  is packed into transactions of at most
  ``max_txn_ops`` operations (etcd's --max-txn-ops, 128 by default), each
  CAS-ing the heads of the rooms it touches (messages.py). A caller is
  resolved only after the transaction holding its messages committed.
* Messages are kept in runs: one key for a room's messages of one
  transaction from one origin (runs.py).
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
from collections.abc import Sequence

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import (
    Committed,
    Conflict,
    ContactsRecord,
    KeyTaken,
    NameTaken,
    NewMessage,
    Store,
    StoredRow,
    StoreUnavailable,
    UserRecord,
)
from curvechat.store.committer import GroupCommitter
from curvechat.store.etcd import conn, runs
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.client import CAS_RETRIES, now_ms
from curvechat.store.etcd.keys import DEFAULT_PREFIX, parse_etcd_url, prefix_end
from curvechat.store.etcd.messages import MessageCommits
from curvechat.store.etcd.rooms import EtcdRooms

__all__ = ["DEFAULT_PREFIX", "EtcdSecurity", "EtcdStore", "parse_etcd_url", "prefix_end"]

EtcdSecurity = conn.EtcdSecurity


def _contacts_value(record: ContactsRecord) -> bytes:
    """The one encoding of `record` (the compare of `put_contacts` needs it)."""
    return rec.enc.encode(rec.Contacts(record.only, record.users))


class EtcdStore(EtcdRooms, Store):
    """The `Store` on an etcd v3 cluster (see the module docstring): the
    client (client.py), rooms and membership (rooms.py), users and messages
    (here, with messages.py's transactions).

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
        super().__init__(
            endpoints, prefix=prefix, timeout=timeout, max_txn_ops=max_txn_ops, security=security
        )
        self.batch_max = batch_max
        self.commits = 0
        self.committed_messages = 0
        self.cas_retries = 0
        self._messages = MessageCommits(self)
        self._committer = GroupCommitter(
            self._messages.commit_group, batch_max=batch_max, name="curvechat-etcd-commit"
        )

    def _meta_written(self, room: str, was: int, meta: tuple[int, int], revision: int) -> None:
        self._messages.meta_written(room, was, meta, revision)

    async def close(self) -> None:
        await self._committer.drain()
        await self.pool.close()

    # --- users -------------------------------------------------------------------
    async def register(self, user: str, sign_pub: bytes, transport_pub: bytes) -> None:
        uk, tk = self.k_user(user), self.k_transport(transport_pub)
        for _ in range(CAS_RETRIES):
            ukv, tkv = await self._read_txn([rpc.RangeRequest(key=uk), rpc.RangeRequest(key=tk)])
            u = ukv[0] if ukv else None
            t = tkv[0] if tkv else None
            if u is not None and rec.user_dec.decode(u.value).sign_pub != bytes(sign_pub):
                raise NameTaken(user)
            if t is not None and t.value.decode() != user:
                raise KeyTaken("the transport key belongs to another user")
            puts = []
            if u is None:
                puts.append(self._put(uk, rec.enc.encode(rec.User(bytes(sign_pub), now_ms()))))
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

    # --- contacts ----------------------------------------------------------------
    async def contacts(self, users: Sequence[str]) -> dict[str, ContactsRecord]:
        wanted = list(dict.fromkeys(users))
        self._require_open()
        found: dict[str, ContactsRecord] = {}
        results = await self._read_many([rpc.RangeRequest(key=self.k_contacts(u)) for u in wanted])
        for user, kvs in zip(wanted, results, strict=True):
            if kvs:
                stored = rec.contacts_dec.decode(kvs[0].value)
                found[user] = ContactsRecord(stored.only, stored.users)
        return found

    async def put_contacts(
        self, user: str, record: ContactsRecord, expect: ContactsRecord | None
    ) -> None:
        key = self.k_contacts(user)
        if expect is None:
            compare = self._version_is(key, 0)
        else:
            compare = self._value_is(key, _contacts_value(expect))
        resp = await self._txn([compare], [self._put(key, _contacts_value(record))])
        if not resp.succeeded:
            raise Conflict(f"the contacts of {user!r} changed")

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
        max_bytes: int | None = None,
    ) -> list[StoredRow]:
        lo = 0 if after is None else max(after + 1, 0)
        if limit <= 0 or (before is not None and lo >= before):
            await self._room_read(room)  # NoSuchRoom, or nothing to read
            return []
        if after is None:
            return await runs.read_newest(self, room, before, limit, max_bytes)
        return await runs.read_from(self, room, lo, before, limit, max_bytes)
