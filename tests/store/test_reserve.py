"""The disk space a single node keeps free (`store/reserve.py`): the rule,
its measures, and what the SQLite store refuses and still does under it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from curvechat.store import (
    EpochRecord,
    MemberChange,
    OpRecord,
    SQLiteStore,
    StoreFull,
    StoreUnavailable,
)
from curvechat.store.reserve import MIB, REFRESH_S, DiskReserve, Reserve

from .test_sqlite import make_room, msg


def test_the_rule_goes_low_under_the_floor_and_back_only_past_the_margin() -> None:
    rule = Reserve(100 * MIB)
    assert rule.resume_at == 125 * MIB  # a quarter of the floor, under the 64 MiB margin
    assert not rule.observe(101 * MIB) and not rule.low and rule.refusal() is None
    assert rule.observe(99 * MIB) and rule.low
    refusal = rule.refusal()
    assert isinstance(refusal, StoreFull) and isinstance(refusal, StoreUnavailable)
    assert refusal.code == "store_full"
    assert "99 MiB free, under the 100 MiB it keeps" in str(refusal)
    assert not rule.observe(120 * MIB) and rule.low  # above the floor, under the margin
    assert rule.observe(125 * MIB) and not rule.low
    big = Reserve(1024 * MIB)
    assert big.resume_at == (1024 + 64) * MIB


def test_a_departure_waits_under_a_quarter_of_the_reserve_and_a_leave_a_sixteenth() -> None:
    rule = Reserve(160 * MIB)
    rule.observe(41 * MIB)
    assert rule.refusal() is not None
    assert rule.refusal("departure") is None and rule.refusal("leave") is None
    rule.observe(39 * MIB)
    refusal = rule.refusal("departure")
    assert refusal is not None and "only leaving a room goes on" in str(refusal)
    assert rule.refusal("leave") is None
    rule.observe(9 * MIB)
    refusal = rule.refusal("leave")
    assert refusal is not None and "under a sixteenth of the 160 MiB" in str(refusal)
    assert "nothing is written" in str(refusal)


def test_a_reserve_of_zero_is_off_and_a_negative_one_is_refused() -> None:
    rule = Reserve(0)
    assert not rule.observe(0) and not rule.low
    with pytest.raises(ValueError):
        Reserve(-1)


def test_writes_measure_the_disk_at_most_once_a_refresh() -> None:
    now = [100.0]
    free = [10 * MIB]
    measured: list[Path] = []

    def measure(path: Path) -> int:
        measured.append(path)
        return free[0]

    reserve = DiskReserve(Path("/x"), 20 * MIB, measure=measure, clock=lambda: now[0])
    with pytest.raises(StoreFull):
        reserve.check()
    free[0] = 100 * MIB
    now[0] += REFRESH_S / 2
    with pytest.raises(StoreFull):  # not measured again yet
        reserve.check()
    assert len(measured) == 1
    now[0] += REFRESH_S / 2
    reserve.check()  # measured again: room enough
    assert measured == [Path("/x")] * 2


def test_a_disk_that_cannot_be_measured_changes_nothing() -> None:
    def broken(path: Path) -> int:
        raise FileNotFoundError(path)

    reserve = DiskReserve(Path("/gone"), 20 * MIB, measure=broken)
    assert not reserve.measure()
    reserve.check()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, list[int]]]:
    """A store whose disk has `free[0]` bytes free, keeping 64 MiB."""
    free = [1024 * MIB]
    s = SQLiteStore(tmp_path / "chat.sqlite3", min_free_bytes=64 * MIB)
    s.reserve = DiskReserve(tmp_path, 64 * MIB, measure=lambda _: free[0], clock=lambda: 0.0)
    await s.open()
    yield s, free
    await s.close()


async def test_under_the_reserve_new_content_waits_and_the_rest_goes_on(
    store: tuple[SQLiteStore, list[int]],
) -> None:
    s, free = store
    await s.register("alice", b"s" * 32, b"t" * 32)
    await make_room(s, "r")
    await s.append_messages([msg("r", "alice", "t1")])
    free[0] = 10 * MIB
    s.reserve.measure()
    with pytest.raises(StoreFull):
        await s.append_messages([msg("r", "alice", "t2")])
    with pytest.raises(StoreFull):
        await s.register("bob", b"b" * 32, b"u" * 32)
    with pytest.raises(StoreFull):
        await make_room(s, "q")
    # a membership change and its new epoch still go through, and reads
    record = await s.append_op(
        "r",
        OpRecord(1, b"leave", b"sig"),
        [MemberChange("alice", False, False)],
        EpochRecord(1, 1, "alice"),
        [],
    )
    assert record.op_head == 1 and record.epoch == 1
    assert [row.seq for row in await s.messages("r")] == [1]
    assert await s.users(["bob"]) == {}
    free[0] = 100 * MIB
    s.reserve.measure()
    (done,) = await s.append_messages([msg("r", "alice", "t2")])
    assert done.seq == 2 and not done.duplicate
