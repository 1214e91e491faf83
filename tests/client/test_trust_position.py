"""Which epoch of a room is current (`client/trust/position.py`), without
sockets: the top the server reports, raised by epochs this process makes
and by keys filed right above it; keys held above it are never the current
one, and the next epoch follows the current one."""

from __future__ import annotations

from curvechat.client.trust.position import Position
from curvechat.client.trust.rules import EpochRecord


def held(*epochs: int, mine: tuple[int, ...] = ()) -> dict[int, EpochRecord]:
    """Keys for `epochs`, given by bob, and for `mine`, made by alice."""
    return {
        e: EpochRecord(e, 0, bytes(32), "alice" if e in mine else "bob")
        for e in sorted({*epochs, *mine})
    }


def test_before_any_report_the_highest_key_held_is_current() -> None:
    pos = Position()
    assert pos.current("r", {}) is None and pos.next_epoch("r", {}) == 0
    assert pos.current("r", held(0, 1, 2)) == 2 and pos.next_epoch("r", held(0, 1, 2)) == 3


def test_a_key_held_above_the_reported_epoch_is_not_current() -> None:
    pos = Position()
    keys = held(0, 1_000_000)
    pos.reported("r", 0)
    assert pos.current("r", keys) == 0 and pos.next_epoch("r", keys) == 1
    pos.filed("r", [1_000_000], keys)  # not right above the top: no raise
    assert pos.top("r", keys) == 0


def test_keys_filed_right_above_the_top_raise_it_one_after_the_other() -> None:
    pos = Position()
    pos.reported("r", 1)
    keys = held(0, 1, 2, 3, 5)
    pos.filed("r", [2, 3, 5], keys)
    assert pos.top("r", keys) == 3 and pos.current("r", keys) == 3
    more = held(0, 1, 2, 3, 5, 7)
    pos.filed("r", [7], more)  # a gap: no raise
    assert pos.top("r", more) == 3


def test_an_epoch_we_made_raises_the_top_and_a_report_sets_it_either_way() -> None:
    pos = Position()
    pos.reported("r", 4)
    pos.made("r", 5)
    keys = held(4, mine=(5,))
    assert pos.next_epoch("r", keys) == 6
    pos.made("r", 2)  # an older attempt taken late does not lower it
    assert pos.top("r", keys) == 5
    pos.reported("r", 3)  # the server's word, lower, and 4 is bob's
    assert pos.current("r", held(2, 4)) == 2 and pos.next_epoch("r", held(2, 4)) == 3


def test_a_key_of_ours_filed_from_a_packet_does_not_raise_the_top() -> None:
    """A server that refused our rotation may keep its packets and serve us
    ours later: filed, it is only a key above the top (an epoch this
    process made raises it: `made`)."""
    pos = Position()
    pos.reported("r", 0)
    keys = held(0, mine=(1,))
    assert pos.current("r", keys) == 0 and pos.next_epoch("r", keys) == 1


def test_the_next_epoch_follows_the_current_one_not_a_reported_one_we_lack() -> None:
    """A reported epoch we hold no key for is either not ours yet or the
    server's lie: the rotation asks for the current one's next (refused if
    the epoch exists: the refusal brings its key)."""
    pos = Position()
    pos.reported("r", 6)
    assert pos.current("r", held(3, 4)) == 4 and pos.next_epoch("r", held(3, 4)) == 5
    assert pos.next_epoch("r", {}) == 7
    assert pos.current("other", held(0)) == 0  # rooms apart
