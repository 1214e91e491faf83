"""When the packets of an epoch whose messages opened under no key held are
asked for again (`client/trust/splits.py`): once a round, and again in the
same round when the ask failed (`later`), so that a row is not stored
unopened for want of an ask that never reached a node."""

from __future__ import annotations

from curvechat.client.trust.splits import Splits


def test_an_epoch_is_asked_for_once_a_round() -> None:
    splits = Splits(lambda event: None)
    splits.mismatched("r", 2)
    splits.mismatched("r", 2)
    splits.mismatched("q", 5)
    assert splits.to_ask("r") == [2]
    splits.mismatched("r", 2)  # asked this round
    assert splits.to_ask("r") == [] and splits.to_ask("q") == [5]
    splits.new_round()
    splits.mismatched("r", 2)
    assert splits.to_ask("r") == [2]


def test_an_ask_that_failed_is_asked_again_in_the_round() -> None:
    splits = Splits(lambda event: None)
    splits.mismatched("r", 2)
    splits.mismatched("r", 3)
    assert splits.to_ask("r") == [2, 3]
    splits.later("r", [2, 3])
    assert splits.to_ask("r") == [2, 3]
    assert splits.to_ask("r") == []
