"""A local cache with rows that no longer open (the file damaged on disk)
stays usable: such a message is shown as damaged, such a queued message
or room key is left out, and everything else reads as before. A cache
sealed under another identity's key is refused when it is opened."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from curvechat.client.cache import Cache, CacheError
from curvechat.client.messagerows import DAMAGED
from curvechat.protocol import messages as m

KEY = b"k" * 32


def _damage(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql)
    db.close()


def test_damaged_rows_are_left_out_or_shown_as_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.db"
    cache = Cache(path, KEY)
    cache.ensure_room("r")
    cache.enqueue_many("r", ["t1", "t2", "t3", "t4"], ["one", "two", "three", "four"])
    sent = [
        (item, m.SendAck(room="r", txn=item.txn, seq=k + 1, ts=0), 0)
        for k, item in enumerate(cache.outbox()[:2])
    ]
    cache.record_sent("r", "alice", sent)
    cache.put_epoch_key("r", 0, 0, bytes(32), "bob")
    cache.put_epoch_key("r", 1, 0, bytes(range(32)), "bob")
    cache.close()

    _damage(path, "UPDATE messages SET sealed = substr(sealed, 1, 20) WHERE seq = 1")
    _damage(path, "UPDATE outbox SET sealed = zeroblob(60) WHERE txn = 't3'")
    _damage(path, "UPDATE epoch_keys SET sealed = x'00' WHERE epoch = 0")

    cache = Cache(path, KEY)
    with caplog.at_level(logging.WARNING, logger="curvechat.client"):
        rows = cache.messages("r")
        queued = cache.outbox()
        keys = cache.epoch_records("r")
    assert [(r.seq, r.text, r.error) for r in rows] == [(1, None, DAMAGED), (2, "two", None)]
    assert [q.text for q in queued] == ["four"]
    assert sorted(keys) == [1] and keys[1].key == bytes(range(32))
    assert len([r for r in caplog.records if "does not open" in r.getMessage()]) == 3
    cache.close()


def test_a_cache_sealed_under_another_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    Cache(path, KEY).close()
    with pytest.raises(CacheError, match="not written by this identity"):
        Cache(path, b"x" * 32)
    Cache(path, KEY).close()  # its own key still opens it
