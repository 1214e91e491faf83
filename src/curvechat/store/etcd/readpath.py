"""What the group commit's read path (messages.py) reads before it plans a
transaction: each room's head and meta with their ``mod_revision``, then
the idempotency keys of the messages and the ``after`` keys they name.

The order is the point: heads first, then idempotency keys. A txn id
absent from the later read was not committed before the heads were read,
so committing it anyway would also have moved its room's head, and the
transaction's compare on that head fails.

What it must never do: write anything, or read the idempotency keys
before the heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import NewMessage
from curvechat.store.etcd import records as rec

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdStore

Heads = dict[str, tuple[rec.Head, int] | None]
"""room -> (its head, the head's mod_revision), None for a room that does not exist."""
Metas = dict[str, tuple[tuple[int, int], int]]
"""room -> ((epoch, op_head), mod_revision of its meta)."""
Known = dict[bytes, tuple[int, int]]
"""idempotency key -> (seq, ts) of the message stored under it."""


async def read_rooms(
    st: EtcdStore, batches: Sequence[Sequence[NewMessage]], todo: list[int]
) -> tuple[Heads, Metas, Known]:
    """The heads and metas of every room the batches in `todo` write to,
    and the idempotency and `after` keys of their messages that are stored."""
    rooms = list(dict.fromkeys(m.room for i in todo for m in batches[i]))
    idem_keys = list(
        dict.fromkeys(st.k_idem(m.room, m.sender, m.txn) for i in todo for m in batches[i])
    )
    # The `after` keys too: a predecessor found here stays stored; one not
    # found may be stored by this very transaction (earlier in it) or not.
    own = set(idem_keys)
    idem_keys += dict.fromkeys(
        k
        for i in todo
        for m in batches[i]
        if m.after is not None and (k := st.k_idem(m.room, m.sender, m.after)) not in own
    )
    heads: Heads = {}
    # A message whose `expect` differs from its room's meta is refused as
    # stale, and the commit compares the metas too, so that no membership
    # change slips in before it.
    metas: Metas = {}
    got = await st._read_many(
        [rpc.RangeRequest(key=k) for r in rooms for k in (st.k_head(r), st.k_meta(r))],
        group=2,
    )
    for n, r in enumerate(rooms):
        kvs, meta_kvs = got[2 * n], got[2 * n + 1]
        heads[r] = (rec.head_dec.decode(kvs[0].value), kvs[0].mod_revision) if kvs else None
        if meta_kvs:
            meta = rec.meta_dec.decode(meta_kvs[0].value)
            metas[r] = ((meta.epoch, meta.op_head), meta_kvs[0].mod_revision)
    got = await st._read_many([rpc.RangeRequest(key=k) for k in idem_keys])
    known: Known = {
        k: rec.seqts_dec.decode(kvs[0].value) for k, kvs in zip(idem_keys, got, strict=True) if kvs
    }
    return heads, metas, known
