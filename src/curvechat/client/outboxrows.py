"""The cache's outbox rows: what the user wrote and the server has not yet
acknowledged, in the order written, each text sealed at rest.

A mixin of `Cache`: it shares the cache's connection and sealing key. A
write that queues waits for the disk (synchronous=FULL for that commit): a
message the user sent is never lost by a crash of the client. The one
exception is a message queued from an event handler while a batch of
messages is being written: it joins that transaction (NORMAL), and a batch
that fails takes it back with the rest. It must never decide what is sent
or when: that is the outbox's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from curvechat.client.model import CachedMessage, OutboxItem
from curvechat.client.sending import Placed, place_acks
from curvechat.protocol import messages as m

if TYPE_CHECKING:
    from curvechat.client.cache import MessageBatch
    from curvechat.client.messagerows import Held

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL, txn TEXT NOT NULL UNIQUE, sealed BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
"""

_INSERT = "INSERT INTO outbox (room, txn, sealed, created_ms) VALUES (?, ?, ?, ?)"


class OutboxRows:
    _db: sqlite3.Connection
    _seal: Callable[[bytes], bytes]
    _open: Callable[[bytes], bytes]
    _open_or_none: Callable[[bytes, str], bytes | None]
    _tx: Callable[[], Any]
    batch: Callable[[str], MessageBatch]
    holders: Callable[[str, Sequence[int]], dict[int, tuple[str, str, Held]]]
    own_txns: Callable[[str, str, Sequence[str]], set[str]]

    def enqueue(self, room: str, txn: str, text: str) -> OutboxItem:
        now = int(time.time() * 1000)
        sealed = self._seal(text.encode())
        with self._durable():
            cur = self._db.execute(_INSERT, (room, txn, sealed, now))
        return OutboxItem(int(cur.lastrowid or 0), room, txn, text, now, sealed)

    def enqueue_many(self, room: str, txns: list[str], texts: list[str]) -> None:
        """Queue several messages with one durable commit (one fsync)."""
        now = int(time.time() * 1000)
        rows = [(room, t, self._seal(x.encode()), now) for t, x in zip(txns, texts, strict=True)]
        if self._db.in_transaction:  # queued from an event handler inside a batch: joins it
            self._db.executemany(_INSERT, rows)
            return
        with self._durable(), self._tx():
            self._db.executemany(_INSERT, rows)

    def outbox(self, known: Mapping[str, str] | None = None) -> list[OutboxItem]:
        """The queued messages, in order; a text `known` by txn (the caller
        queued it) is taken from there, not opened again."""
        known = known or {}
        out = []
        for r in self._db.execute(
            "SELECT id, room, txn, sealed, created_ms FROM outbox ORDER BY id"
        ):
            text = known.get(r[2])
            if text is None:
                opened = self._open_or_none(r[3], "a queued message")
                if opened is None:  # left in the file, out of the queue
                    continue
                text = opened.decode()
            out.append(OutboxItem(r[0], r[1], r[2], text, r[4], r[3]))
        return out

    def outbox_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dequeue(self, *txns: str) -> None:
        self._db.executemany("DELETE FROM outbox WHERE txn=?", [(t,) for t in txns])

    def record_sent(
        self, room: str, me: str, acked: Sequence[tuple[OutboxItem, m.SendAck, int]]
    ) -> tuple[list[CachedMessage], list[tuple[OutboxItem, str]], list[OutboxItem]]:
        """Sends of `room` the server acknowledged, in order, as (item, ack,
        epoch), judged against what the cache holds (`sending.place_acks`),
        out of the outbox and into the room's messages in one transaction.
        Returns the messages to show (each once: not those a push or a sync
        brought in already), the sends whose ack cannot be true, with why,
        and those whose seq holds a row that did not open yet but claims to
        be them: both stay in the outbox, for the outbox to fail or send again."""
        with self.batch(room) as batch:
            plan = place_acks(
                me,
                room,
                [(item.txn, ack.room, ack.txn, ack.seq) for item, ack, _ in acked],
                taken=self.holders(room, [ack.seq for _, ack, _ in acked]),
                stored=self.own_txns(room, me, [item.txn for item, _, _ in acked]),
            )
            rows: list[tuple[int, int, str, str, int | None, bytes, int | None]] = []
            shown: list[CachedMessage] = []
            bad: list[tuple[OutboxItem, str]] = []
            waiting: list[OutboxItem] = []
            done: list[str] = []
            for (item, ack, epoch), (where, why) in zip(acked, plan, strict=True):
                if where is Placed.BAD:
                    bad.append((item, why))
                    continue
                if where is Placed.WAIT:
                    waiting.append(item)
                    continue
                done.append(item.txn)
                if where is Placed.STORE:
                    # The text the outbox row holds sealed at rest is the message row's.
                    sealed = item.sealed or self._seal(item.text.encode())
                    rows.append((ack.seq, ack.ts, me, item.txn, item.created_ms, sealed, epoch))
                    shown.append(
                        CachedMessage(
                            room, ack.seq, ack.ts, me, item.txn, item.created_ms, item.text, None
                        )
                    )
            self.dequeue(*done)
            batch.add_sealed(rows)
        return shown, bad, waiting

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """What the user wrote is never lost: the commits inside wait for the disk."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
