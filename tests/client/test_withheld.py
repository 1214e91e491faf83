"""Seqs the server did not hand out: the rule (`withheld.missing`) and the
cache's record of them (`withheldrows.py`), without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from curvechat.client.cache import Cache
from curvechat.client.withheld import MAX_WITHHELD, Ask, missing, pages, said, within
from curvechat.client.withheldrows import without
from curvechat.protocol import messages as m
from curvechat.protocol.limits import REPLY_BUDGET_BYTES

KEY = bytes(32)


@pytest.mark.parametrize(
    ("after", "served", "top", "expected"),
    [
        (0, [1, 2, 3], None, []),
        (0, [], None, []),  # nothing served, nothing known to exist
        (0, [2, 3], None, [(1, 1)]),
        (10, [11, 14, 15, 18], None, [(12, 13), (16, 17)]),
        (10, [18, 11, 14, 15], None, [(12, 13), (16, 17)]),  # in any order
        (10, [5, 10, 11], None, []),  # at or below `after`: not asked for
        (10, [], 15, [(11, 15)]),  # a gap fill below a pushed 16 that brought nothing
        (10, [11, 12], 15, [(13, 15)]),
        (10, [11, 12, 17], 15, [(13, 15)]),  # above `top`: not asked for
        (0, [2, 4, 10_006, 10_008], None, [(1, 1), (3, 3)]),  # 5-10,005: too wide
        (0, [1], 10**9, []),  # a gap fill below a made-up push
        (0, [2, 10_002], None, [(1, 1), (3, 10_001)]),  # exactly MAX_WITHHELD wide
    ],
)
def test_what_a_page_left_out(
    after: int, served: list[int], top: int | None, expected: list[tuple[int, int]]
) -> None:
    assert missing(after, served, top) == expected


def test_what_the_user_is_told_names_a_few_ranges() -> None:
    assert said([(3, 3)]).startswith("the server did not hand out a message of this room (seq 3)")
    many = said([(i, i + 1) for i in range(0, 70, 10)])
    assert "messages of this room (seq 0-1, 10-11, 20-21, 30-31, 40-41, ...)" in many


def room_with(cache: Cache, seqs: list[int]) -> None:
    with cache.batch("r") as batch:
        for seq in seqs:
            batch.add(seq, 0, "alice", f"t{seq:08d}", None, f"m{seq}", None)


def test_the_cursor_moves_over_withheld_seqs_and_what_comes_later_fills_them(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path / "c.db", KEY)
    cache.ensure_room("r")
    room_with(cache, [1, 2, 5, 6, 9])
    assert cache.room("r").cursor == 2  # type: ignore[union-attr]
    cache.add_withheld("r", [(3, 4), (7, 8)])
    assert cache.room("r").cursor == 9  # type: ignore[union-attr]
    room_with(cache, [10])
    assert cache.room("r").cursor == 10  # type: ignore[union-attr]
    room_with(cache, [8, 11])  # a row stored at a withheld seq takes it out; 11 is in none
    assert cache.withheld("r", 10) == [(3, 4), (7, 7)]
    room_with(cache, [3])
    assert cache.withheld("r", 10) == [(4, 4), (7, 7)]
    room_with(cache, [7])
    assert cache.withheld("r", 10) == [(4, 4)] and cache.withheld_count("r") == 1
    assert cache.withheld_after("", -1, 10) == [("r", 4, 4)]


def test_ranges_recorded_never_overlap_so_one_cannot_wipe_out_another(tmp_path: Path) -> None:
    """Two notes that overlap: the second adds only what the first did not
    hold. Before, both were kept, and taking a seq out of one re-inserted
    its rest over the other (INSERT OR REPLACE), forgetting 111-5000."""
    cache = Cache(tmp_path / "c.db", KEY)
    cache.ensure_room("r")
    cache.add_withheld("r", [(100, 110)])
    cache.add_withheld("r", [(101, 5000)])
    assert cache.withheld("r", 10) == [(100, 110), (111, 5000)]
    room_with(cache, [100])
    assert cache.withheld("r", 10) == [(101, 110), (111, 5000)]
    assert cache.withheld_count("r") == 4900


@pytest.mark.parametrize(
    ("ranges", "taken", "left"),
    [
        ([(1, 10)], [], [(1, 10)]),
        ([(1, 10)], [1, 10], [(2, 9)]),
        ([(1, 10)], [(3, 4), 7], [(1, 2), (5, 6), (8, 10)]),
        ([(1, 10), (20, 30)], [(5, 25)], [(1, 4), (26, 30)]),
        ([(1, 3)], [(0, 9)], []),
    ],
)
def test_what_is_left_of_ranges(
    ranges: list[tuple[int, int]], taken: list[int | tuple[int, int]], left: list[tuple[int, int]]
) -> None:
    assert without(ranges, taken) == left


def test_a_room_holds_at_most_its_budget_of_withheld_seqs() -> None:
    assert within([(1, 4000), (5000, 9000), (9500, 12000)], 10_000) == [(1, 4000), (5000, 9000)]
    assert within([(1, 1)], 0) == []
    assert within([(1, MAX_WITHHELD)], MAX_WITHHELD) == [(1, MAX_WITHHELD)]


def _stored(seq: int, size: int) -> m.StoredMessage:
    env = m.Envelope(
        room="r", epoch=0, sender="alice", txn=f"t{seq}", nonce=bytes(24), ct=bytes(size),
        sig=bytes(64),
    )  # fmt: skip
    return m.StoredMessage(seq=seq, ts=1, envelope=env)


def _node(held: dict[int, int]) -> Ask:
    """An honest node's `history` over `held` (seq -> ciphertext size): pages
    cut at its reply budget, as `server/handlers.py` cuts them."""

    async def ask(req: m.AnyRequest, _kind: object) -> m.Messages:
        assert isinstance(req, m.History) and req.after is not None
        items, budget = [], REPLY_BUDGET_BYTES
        for seq in range(req.after + 1, req.after + req.limit + 1):
            if seq in held:
                if items and budget - held[seq] < 0:
                    break
                budget -= held[seq]
                items.append(_stored(seq, held[seq]))
        return m.Messages(room="r", items=items, head=max(held))

    return ask


@pytest.mark.parametrize(
    ("held", "hi", "got", "last"),
    [
        ({s: 100 for s in range(1, 1201)}, 1200, 1200, 1200),  # full pages: on to the end
        ({s: 64_000 for s in range(1, 41)}, 40, 40, 40),  # pages cut at the budget
        ({s: 100 for s in (*range(1, 5), *range(11, 21))}, 20, 14, None),  # 5-10 left out
        ({s: 100 for s in range(3, 9)}, 20, 6, None),  # a short page ends the range
    ],
)
async def test_pages_go_on_after_full_and_cut_pages_only(
    held: dict[int, int], hi: int, got: int, last: int | None
) -> None:
    """A range asked for again was asked one page a time: a range of more
    than a page (500), or of long messages, came over several connections."""
    seen = [p async for p in pages(_node(held), "r", 0, hi)]
    assert sum(len(p.items) for p in seen) == got
    assert seen[-1].last == last
    assert all(p.last is not None for p in seen[:-1])
