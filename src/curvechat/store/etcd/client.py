"""The etcd client under the store: configuration, the member pool, the
RPC helpers every part of the etcd backend builds its transactions with,
and the store's lifecycle (open, ping) and the raw calls the cluster feed
and the node registry use (put with a lease, a prefix read, streams).

What it must never do: know what a key or value means (keys.py and
records.py do), or retry a write on its own (the callers compare and
retry).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import ChangeTooLarge, StoreUnavailable
from curvechat.store.etcd import conn
from curvechat.store.etcd.keys import DEFAULT_PREFIX, Keys, prefix_end
from curvechat.store.etcd.pool import MemberPool

CAS_RETRIES = 200

# Looked up once: each lookup through protobuf's enum wrapper is a Python call.
_EQUAL = rpc.Compare.CompareResult.EQUAL
_VERSION = rpc.Compare.CompareTarget.VERSION
_MOD = rpc.Compare.CompareTarget.MOD


def now_ms() -> int:
    return int(time.time() * 1000)


class EtcdClient(Keys):
    """The connection half of `EtcdStore` (see store.py for the whole)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        max_txn_ops: int = 128,
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
        self.security = security
        self.pool = MemberPool(endpoints, prefix=self.prefix, timeout=timeout, security=security)
        #: Written into every message this store commits, so that a node can
        #: tell its own commits from other nodes' in the watch.
        self.origin = ""
        #: Whose health key the probe writes (`ping`): a node's name, so that
        #: a node's runs share one key (its boot id made a key a run, left
        #: behind for good); else the origin.
        self.prober = ""
        # Messages written as runs (store/etcd/runs.py), or a message a key
        # while a node that cannot read runs is in the cluster (cluster.py).
        self.message_runs = True

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
        return [list(r.kvs) for r in await self._ranges_txn(requests)]

    async def _ranges_txn(self, requests: Sequence[Any]) -> list[Any]:
        resp = await self._txn([], [rpc.RequestOp(request_range=r) for r in requests])
        return [r.response_range for r in resp.responses]

    async def _ranges_many(self, requests: Sequence[Any], group: int = 1) -> list[Any]:
        """Each range's response, in as many transactions as max_txn_ops
        needs; each run of `group` consecutive requests stays in one (is read
        at one revision)."""
        step = max(1, self.max_txn_ops // group) * group
        out: list[Any] = []
        for i in range(0, len(requests), step):
            out += await self._ranges_txn(requests[i : i + step])
        return out

    async def _read_many(self, requests: Sequence[Any], group: int = 1) -> list[list[Any]]:
        """Like `_read_txn`, in as many transactions as max_txn_ops needs
        (`_ranges_many`)."""
        return [list(r.kvs) for r in await self._ranges_many(requests, group)]

    async def _count_many(self, requests: Sequence[Any]) -> list[int]:
        """The count of each range (`count_only`), in as many transactions as
        max_txn_ops needs."""
        return [int(r.count) for r in await self._ranges_many(requests)]

    async def _send_txn(self, req: Any) -> Any:
        """Send a TxnRequest built in place (`add_put`, `add_version_is`,
        `add_mod_is`)."""
        return await self._call("Txn", req)

    # Building in place: a put or compare added to the request's own repeated
    # field costs about a quarter of one built apart and passed in, which
    # protobuf copies (the group commit adds three for every message).
    @staticmethod
    def add_put(ops: Any, key: bytes, value: bytes) -> None:
        """Add a put to `ops` (a TxnRequest's `success`)."""
        put = ops.add().request_put
        put.key = key
        put.value = value

    @staticmethod
    def add_version_is(compares: Any, key: bytes, version: int, result: Any = _EQUAL) -> None:
        """Add `_version_is(key, version, result)` to `compares` (a TxnRequest's `compare`)."""
        c = compares.add()
        c.key = key
        c.result = result
        c.target = _VERSION
        c.version = version

    @staticmethod
    def add_mod_is(compares: Any, key: bytes, revision: int) -> None:
        """Add `_mod_is(key, revision)` to `compares` (a TxnRequest's `compare`)."""
        c = compares.add()
        c.key = key
        c.result = _EQUAL
        c.target = _MOD
        c.mod_revision = revision

    @staticmethod
    def _put(key: bytes, value: bytes) -> Any:
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))

    @staticmethod
    def _delete(key: bytes) -> Any:
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))

    @staticmethod
    def _version_is(key: bytes, version: int, result: Any = rpc.Compare.CompareResult.EQUAL) -> Any:
        """Compare a key's version (0: absent) with `result` (EQUAL, GREATER...)."""
        return rpc.Compare(
            key=key, result=result, target=rpc.Compare.CompareTarget.VERSION, version=version
        )

    @staticmethod
    def _value_is(key: bytes, value: bytes) -> Any:
        """Compare a key's value with `value` (fails when the key is absent)."""
        return rpc.Compare(
            key=key,
            result=rpc.Compare.CompareResult.EQUAL,
            target=rpc.Compare.CompareTarget.VALUE,
            value=value,
        )

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

    async def ping(self) -> None:
        # A write, not a read: reads still work when etcd refuses writes (its
        # space quota exceeded, the NOSPACE alarm), and then so must the probe
        # fail. The key is outside the ranges the cluster watches.
        who = self.prober or self.origin or "store"
        await self._call(
            "Put", rpc.PutRequest(key=self._k("health", who), value=str(now_ms()).encode())
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
