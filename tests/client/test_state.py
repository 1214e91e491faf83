"""The connection state machine and the reconnect back-off."""

from __future__ import annotations

import itertools
import random

import pytest

from curvechat.client.state import (
    TRANSITIONS,
    Backoff,
    ConnEvent,
    ConnState,
    InvalidTransition,
    transition,
)

S, E = ConnState, ConnEvent

# The machine as the module's docstring describes it, written out by hand.
EXPECTED = {
    (S.OFFLINE, E.START): S.CONNECTING,
    (S.CONNECTING, E.WELCOMED): S.LIVE,
    (S.CONNECTING, E.FAILED): S.RECONNECTING,
    (S.LIVE, E.LOST): S.RECONNECTING,
    (S.RECONNECTING, E.RETRY): S.CONNECTING,
    (S.OFFLINE, E.CLOSE): S.CLOSED,
    (S.CONNECTING, E.CLOSE): S.CLOSED,
    (S.LIVE, E.CLOSE): S.CLOSED,
    (S.RECONNECTING, E.CLOSE): S.CLOSED,
}

ALL_PAIRS = list(itertools.product(ConnState, ConnEvent))
UNLISTED = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


def test_the_table_is_the_documented_machine() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("pair", "after"), TRANSITIONS.items(), ids=str)
def test_every_listed_transition_works(pair: tuple[ConnState, ConnEvent], after: ConnState) -> None:
    state, event = pair
    assert transition(state, event) is after


@pytest.mark.parametrize("pair", UNLISTED, ids=str)
def test_every_unlisted_transition_is_refused(pair: tuple[ConnState, ConnEvent]) -> None:
    state, event = pair
    with pytest.raises(InvalidTransition) as info:
        transition(state, event)
    assert str(event) in str(info.value) and str(state) in str(info.value)


def test_listed_and_unlisted_cover_every_pair() -> None:
    assert len(TRANSITIONS) + len(UNLISTED) == len(ConnState) * len(ConnEvent)
    assert len(UNLISTED) > 0


@pytest.mark.parametrize("event", ConnEvent)
def test_closed_is_terminal(event: ConnEvent) -> None:
    with pytest.raises(InvalidTransition):
        transition(ConnState.CLOSED, event)
    assert all(state is not ConnState.CLOSED for state, _ in TRANSITIONS)


@pytest.mark.parametrize("state", [s for s in ConnState if s is not ConnState.CLOSED])
def test_close_works_from_every_other_state(state: ConnState) -> None:
    assert transition(state, ConnEvent.CLOSE) is ConnState.CLOSED


def test_every_state_is_reachable_from_offline() -> None:
    seen = {ConnState.OFFLINE}
    frontier = [ConnState.OFFLINE]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(ConnState)


def test_a_typical_life() -> None:
    state = ConnState.OFFLINE
    for event in [E.START, E.FAILED, E.RETRY, E.WELCOMED, E.LOST, E.RETRY, E.WELCOMED, E.CLOSE]:
        state = transition(state, event)
    assert state is ConnState.CLOSED


# --- back-off ---------------------------------------------------------------------


def ceiling_of(backoff: Backoff, n: int) -> float:
    """min(cap, base * 2**n), without overflowing a float for huge n."""
    return backoff.cap if n > 1000 else min(backoff.cap, backoff.base * 2.0**n)


BACKOFFS = [Backoff(), Backoff(base=0.05, cap=0.5), Backoff(base=1.0, cap=60.0), Backoff(2.0, 2.0)]


@pytest.mark.parametrize("backoff", BACKOFFS, ids=repr)
def test_delay_stays_within_the_ceiling(backoff: Backoff) -> None:
    rng = random.Random(1234)
    for n in [*range(0, 70), 100, 1000, 10**6]:
        ceiling = ceiling_of(backoff, n)
        for _ in range(50):
            delay = backoff.delay(n, rng)
            assert isinstance(delay, float)
            assert 0.0 <= delay <= ceiling, (n, delay, ceiling)


def test_delay_without_an_rng_stays_within_the_ceiling() -> None:
    backoff = Backoff()
    for n in range(40):
        assert 0.0 <= backoff.delay(n) <= ceiling_of(backoff, n)


def test_the_ceiling_grows_then_caps() -> None:
    backoff = Backoff(base=0.25, cap=10.0)
    rng = random.Random(7)
    # the largest of many draws approaches each attempt's ceiling
    for n, ceiling in [(0, 0.25), (1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (40, 10.0)]:
        draws = [backoff.delay(n, rng) for _ in range(400)]
        assert max(draws) <= ceiling
        assert max(draws) > 0.9 * ceiling, (n, max(draws))


@pytest.mark.parametrize("n", [0, 3, 10, 50])
def test_full_jitter_spreads_the_delays(n: int) -> None:
    backoff = Backoff()
    ceiling = ceiling_of(backoff, n)
    rng = random.Random(99)
    draws = [backoff.delay(n, rng) for _ in range(500)]
    assert len(set(draws)) > 490  # not a constant, not a few values
    # full jitter: the whole range [0, ceiling] is used, not just its top
    assert min(draws) < 0.05 * ceiling
    assert max(draws) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(draws) / len(draws) < 0.6 * ceiling
    below_half = sum(d < ceiling / 2 for d in draws)
    assert 200 < below_half < 300


def test_two_clients_do_not_retry_in_step() -> None:
    backoff = Backoff()
    a, b = random.Random(1), random.Random(2)
    pairs = [(backoff.delay(n, a), backoff.delay(n, b)) for n in range(3, 23)]
    assert sum(x != y for x, y in pairs) == len(pairs)


def test_a_seeded_rng_is_reproducible() -> None:
    backoff = Backoff()
    first = [backoff.delay(n, random.Random(5)) for n in range(20)]
    again = [backoff.delay(n, random.Random(5)) for n in range(20)]
    assert first == again
