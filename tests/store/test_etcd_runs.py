"""Message runs (store/etcd/runs.py) on a real etcd: a transaction writes
one key a room and origin, every history read over runs gives what a
message a key would, and messages stored before runs still read."""

from __future__ import annotations

import asyncio
import itertools

from curvechat.store import NewMessage
from curvechat.store.etcd import EtcdStore, prefix_end
from curvechat.store.etcd import records as rec
from curvechat.store.etcd.runs import RUN_BYTES, decode_run

from .test_etcd import make_room, msg


async def message_keys(etcd_store: EtcdStore) -> list[tuple[str, int]]:
    prefix = etcd_store.message_prefix
    kvs = await etcd_store._range(prefix, prefix_end(prefix), keys_only=True)
    return [etcd_store.parse_msg_key(bytes(kv.key)) for kv in kvs]


async def test_a_transaction_writes_one_run_a_room_and_origin(etcd_store: EtcdStore) -> None:
    await make_room(etcd_store, "r")
    await make_room(etcd_store, "s")
    mine, theirs = "", "node-b"
    batch = [
        NewMessage("r", "alice", "r1", b"1", origin=mine),
        NewMessage("r", "alice", "r2", b"2", origin=mine),
        NewMessage("s", "alice", "s1", b"3", origin=mine),
        NewMessage("r", "bob", "r3", b"4", origin=theirs),
        NewMessage("r", "bob", "r4", b"5", origin=theirs),
        NewMessage("s", "alice", "s2", b"6", origin=mine),
        NewMessage("r", "alice", "r5", b"7", origin=mine),
    ]
    acks = await etcd_store.append_messages(batch)
    assert [(a.room, a.seq) for a in acks] == [
        ("r", 1), ("r", 2), ("s", 1), ("r", 3), ("r", 4), ("s", 2), ("r", 5),
    ]  # fmt: skip
    assert etcd_store.commits == 1
    # r: 1–2 (this node's), 3–4 (node-b's), 5 (this node's); s: 1–2.
    assert await message_keys(etcd_store) == [("r", 2), ("r", 4), ("r", 5), ("s", 2)]
    rows = await etcd_store.messages("r", after=0)
    assert [(x.seq, x.sender, x.txn, x.envelope) for x in rows] == [
        (1, "alice", "r1", b"1"),
        (2, "alice", "r2", b"2"),
        (3, "bob", "r3", b"4"),
        (4, "bob", "r4", b"5"),
        (5, "alice", "r5", b"7"),
    ]
    assert [x.txn for x in await etcd_store.messages("s", limit=5)] == ["s1", "s2"]


def expected(seqs: list[int], after: int | None, before: int | None, limit: int) -> list[int]:
    wanted = [s for s in seqs if (after is None or s > after) and (before is None or s < before)]
    if limit <= 0:
        return []
    return wanted[:limit] if after is not None else wanted[-limit:]


async def test_every_read_of_a_history_in_runs_is_the_history(etcd_store: EtcdStore) -> None:
    """Every `after`, `before` and `limit` around and across the runs'
    edges, against the messages one by one (more runs than a read's first
    round trip asks for, so that reads go on in further ones)."""
    await make_room(etcd_store, "r")
    sizes = [1, 5, 2, 10, 1, 11, 3, 1, 1, 2, 1, 4]
    n = 0
    for size in sizes:
        await etcd_store.append_messages([msg("r", "alice", f"t{n + i:03d}") for i in range(size)])
        n += size
    assert len(await message_keys(etcd_store)) == len(sizes)
    seqs = list(range(1, n + 1))
    bounds: list[int | None] = [None, *range(-1, n + 3)]
    cases = list(itertools.product(bounds, bounds, (1, 3, 9, 100)))

    async def check(after: int | None, before: int | None, limit: int) -> None:
        rows = await etcd_store.messages("r", after=after, before=before, limit=limit)
        got = [x.seq for x in rows]
        assert got == expected(seqs, after, before, limit), (after, before, limit)
        assert [x.txn for x in rows] == [f"t{s - 1:03d}" for s in got]

    for i in range(0, len(cases), 400):
        await asyncio.gather(*(check(*c) for c in cases[i : i + 400]))


async def test_messages_stored_before_runs_still_read(etcd_store: EtcdStore) -> None:
    """A message a key, as stores before runs wrote them: read as runs of
    one, in history and in the feed's decoding, and the room goes on."""
    await make_room(etcd_store, "r")
    for seq in (1, 2):
        old = rec.Msg(1000 + seq, "alice", f"old{seq}", b"e%d" % seq, "node-a")
        await etcd_store.put(etcd_store.k_msg("r", seq), rec.enc.encode(old))
    await etcd_store.put(etcd_store.k_head("r"), rec.enc.encode(rec.Head(2, 1002)))
    acks = await etcd_store.append_messages([msg("r", "alice", "new1"), msg("r", "alice", "new2")])
    assert [a.seq for a in acks] == [3, 4]
    rows = await etcd_store.messages("r", after=0)
    assert [(x.seq, x.txn, x.ts_ms) for x in rows[:2]] == [(1, "old1", 1001), (2, "old2", 1002)]
    assert [x.txn for x in rows[2:]] == ["new1", "new2"]
    assert [x.seq for x in await etcd_store.messages("r", before=3, limit=1)] == [2]
    value = rec.enc.encode(rec.Msg(1001, "alice", "old1", b"e1", "node-a"))
    (row,), origin = decode_run("r", 1, value)
    assert (row.seq, row.txn, origin) == (1, "old1", "node-a")


async def test_a_run_is_cut_at_run_bytes_of_envelopes(etcd_store: EtcdStore) -> None:
    """Big envelopes make several runs of one transaction, so that a read
    of one message gets at most about RUN_BYTES with it."""
    await make_room(etcd_store, "r")
    size = RUN_BYTES // 8
    acks = await etcd_store.append_messages(
        [msg("r", "alice", f"t{i:02d}", size) for i in range(20)]
    )
    assert [a.seq for a in acks] == list(range(1, 21)) and etcd_store.commits == 1
    assert await message_keys(etcd_store) == [("r", 8), ("r", 16), ("r", 20)]
    assert [x.seq for x in await etcd_store.messages("r", after=0)] == list(range(1, 21))


async def test_while_a_node_cannot_read_runs_a_message_is_a_key(etcd_store: EtcdStore) -> None:
    """`message_runs` off (an older node in the cluster): every message its
    own key, in the shape stores before runs wrote and read."""
    await make_room(etcd_store, "r")
    etcd_store.message_runs = False
    await etcd_store.append_messages([msg("r", "alice", f"t{i}") for i in range(3)])
    keys = await message_keys(etcd_store)
    assert keys == [("r", 1), ("r", 2), ("r", 3)]
    kvs = await etcd_store._range(etcd_store.message_prefix, prefix_end(etcd_store.message_prefix))
    assert [rec.msg_dec.decode(kv.value).txn for kv in kvs] == ["t0", "t1", "t2"]
    etcd_store.message_runs = True
    await etcd_store.append_messages([msg("r", "alice", f"t{i}") for i in range(3, 6)])
    assert await message_keys(etcd_store) == [("r", 1), ("r", 2), ("r", 3), ("r", 6)]
    assert [x.txn for x in await etcd_store.messages("r", after=0)] == [f"t{i}" for i in range(6)]
