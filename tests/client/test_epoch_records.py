"""The cache's epoch keys (client/trustrows.py): read and opened once per
room, then kept up to date as keys are stored, so a rotation does not read
and open every key the room ever had again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from curvechat.client.cache import Cache


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache(tmp_path / "cache.db", b"k" * 32)
    yield c
    c.close()


def _opens(cache: Cache, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    opened: list[bytes] = []
    real = cache._open

    def counting(data: bytes) -> bytes:
        opened.append(data)
        return real(data)

    monkeypatch.setattr(cache, "_open", counting)
    return opened


def _key(epoch: int) -> bytes:
    return bytes([epoch % 256]) * 32


def test_a_new_epoch_key_joins_the_records_without_reading_the_others(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    for epoch in range(50):
        cache.put_epoch_key("r", epoch, epoch, _key(epoch), "alice")
    assert sorted(cache.epoch_records("r")) == list(range(50))
    opened = _opens(cache, monkeypatch)
    cache.put_epoch_key("r", 50, 50, _key(50), "bob")
    records = cache.epoch_records("r")
    assert opened == []  # none of the 50 read and opened again
    assert list(records) == list(range(51)) and records[50].key == _key(50)
    assert records[50].sender == "bob" and records[50].after_op == 50
    # An epoch held already keeps what was stored first (INSERT OR IGNORE).
    cache.put_epoch_key("r", 50, 99, _key(7), "mallory")
    assert cache.epoch_records("r")[50].key == _key(50)
    # What is kept is what a fresh read of the file gives.
    fresh = Cache(cache_path(cache), b"k" * 32)
    assert list(fresh.epoch_records("r").items()) == list(cache.epoch_records("r").items())
    fresh.close()


def test_an_older_epoch_takes_its_place_and_a_key_stored_in_a_transaction_is_read_again(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    for epoch in (0, 2, 3):
        cache.put_epoch_key("r", epoch, epoch, _key(epoch), None)
    assert list(cache.epoch_records("r")) == [0, 2, 3]
    opened = _opens(cache, monkeypatch)
    cache.put_epoch_key("r", 1, 1, _key(1), None)  # learned late: still in epoch order
    assert list(cache.epoch_records("r")) == [0, 1, 2, 3]
    assert opened == []  # and the others not read and opened again (history shared late)
    fresh = Cache(cache_path(cache), b"k" * 32)
    assert list(fresh.epoch_records("r").items()) == list(cache.epoch_records("r").items())
    fresh.close()
    # Stored in a transaction that is rolled back: not held.
    with pytest.raises(RuntimeError), cache._tx():
        cache.put_epoch_key("r", 4, 4, _key(4), None)
        raise RuntimeError("the batch failed")
    assert list(cache.epoch_records("r")) == [0, 1, 2, 3]


def cache_path(cache: Cache) -> Path:
    row = cache._db.execute("PRAGMA database_list").fetchone()
    return Path(row[2])
