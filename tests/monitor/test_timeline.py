"""The outage timeline on its own (no socket, no clock): the transition
table row by row, outages with their durations, the overall state, and
what survives a restart of the monitor."""

from __future__ import annotations

import itertools
import json

import pytest

from curvechat.monitor.timeline import (
    MAX_EVENTS,
    MAX_EVENTS_PER_NODE,
    MAX_OUTAGES,
    MAX_OUTAGES_PER_NODE,
    TRANSITIONS,
    Action,
    Health,
    Seen,
    Timeline,
)

A, B = "http://10.0.0.1:7780", "http://10.0.0.2:7780"
T0 = 1_700_000_000_000


def feed(timeline: Timeline, node: str, seen: Seen, at: int, boot: str = "b1") -> None:
    """Bring about input `seen` for `node` at `at`."""
    if seen is Seen.ANSWERED:
        timeline.answered(node, at, name="n", boot=timeline.tracks[node].boot or boot)
    elif seen is Seen.RESTARTED:
        # (an UNKNOWN node has no boot id yet: the row is there for a complete table)
        track = timeline.tracks[node]
        track.boot = track.boot or "b0"
        timeline.answered(node, at, name="n", boot=track.boot + "-new")
    else:
        # the count of failures in a row before this one decides which input it is
        timeline.tracks[node].failures = 0 if seen is Seen.FAILED else timeline.down_after - 1
        timeline.failed(node, at, "connection refused")


def in_state(health: Health) -> Timeline:
    timeline = Timeline()
    timeline.resume(T0)
    timeline.add_node(A)
    if health is not Health.UNKNOWN:
        timeline.answered(A, T0 + 1, name="n", boot="b1")
    if health is Health.DOWN:
        timeline.failed(A, T0 + 2, "refused")
        timeline.failed(A, T0 + 3, "refused")
    assert timeline.tracks[A].health is health
    return timeline


def test_the_table_covers_every_state_and_input() -> None:
    assert set(TRANSITIONS) == set(itertools.product(Health, Seen))


@pytest.mark.parametrize(("state", "seen"), sorted(TRANSITIONS))
def test_each_row_of_the_table(state: Health, seen: Seen) -> None:
    timeline = in_state(state)
    outages = len(timeline.outages)
    feed(timeline, A, seen, T0 + 10)
    health, action = TRANSITIONS[(state, seen)]
    assert timeline.tracks[A].health is health
    opened = len(timeline.outages) - outages
    assert opened == (1 if action is Action.OPEN_OUTAGE else 0)
    if action is Action.CLOSE_OUTAGE:
        assert timeline.outages[-1].end == T0 + 10
    if action is Action.OPEN_OUTAGE or (health is Health.DOWN and state is Health.DOWN):
        assert timeline.open_outage(A) is not None
    if health is Health.UP:
        assert timeline.open_outage(A) is None


def test_an_outage_starts_at_the_first_failed_poll_and_has_a_duration() -> None:
    timeline = Timeline()
    timeline.resume(T0)
    timeline.answered(A, T0 + 1000, name="alpha", boot="b1")
    assert timeline.failed(A, T0 + 2000, "no answer within 2.5 s") == []  # one miss: not down
    assert timeline.tracks[A].health is Health.UP
    [down] = timeline.failed(A, T0 + 3000, "connection refused")
    assert (down.kind, down.t, down.level) == ("node_down", T0 + 2000, "error")
    track = timeline.tracks[A]
    assert (track.health, track.since, track.error) == (
        Health.DOWN,
        T0 + 2000,
        "connection refused",
    )
    assert timeline.summary().state == "down"
    for at in range(T0 + 4000, T0 + 60_000, 1000):
        assert timeline.failed(A, at, "connection refused") == []  # one outage, not many
    [up] = timeline.answered(A, T0 + 65_000, name="alpha-2", boot="b2")
    assert (up.kind, up.duration_ms) == ("node_up", 63_000)
    assert "restarted" in up.detail
    [outage] = timeline.outages
    assert (outage.start, outage.end, outage.duration(T0 + 99_999)) == (
        T0 + 2000,
        T0 + 65_000,
        63_000,
    )
    assert outage.restarted and outage.start_known and outage.watched
    assert outage.last_ok == T0 + 1000
    assert timeline.tracks[A].name == "alpha-2"
    assert timeline.summary().state == "up"


def test_a_restart_between_two_polls_is_a_restart_not_an_outage() -> None:
    timeline = Timeline()
    timeline.answered(A, T0, name="a:1", boot="b1")
    [event] = timeline.answered(A, T0 + 1000, name="a:2", boot="b2")
    assert event.kind == "node_restarted" and "a:1" in event.detail
    assert list(timeline.outages) == [] and timeline.tracks[A].health is Health.UP


def test_a_node_down_when_first_polled_has_an_unknown_start() -> None:
    timeline = Timeline()
    timeline.resume(T0)
    timeline.failed(A, T0 + 1000, "connection refused")
    assert timeline.tracks[A].health is Health.UNKNOWN
    assert timeline.summary().state == "connecting"
    [event] = timeline.failed(A, T0 + 2000, "connection refused")
    assert "before it was first polled" in event.detail
    assert not timeline.outages[-1].start_known


def test_the_overall_state_says_since_when() -> None:
    timeline = Timeline()
    assert timeline.summary().state == "no_nodes"
    timeline.resume(T0)
    timeline.answered(A, T0 + 1000, name="a", boot="a1")
    timeline.answered(B, T0 + 1500, name="b", boot="b1")
    summary = timeline.summary()
    assert (summary.state, summary.since, summary.total) == ("up", T0 + 1500, 2)
    for at in (T0 + 5000, T0 + 6000):
        timeline.failed(B, at, "refused")
    summary = timeline.summary()
    assert (summary.state, summary.down, summary.since) == ("partial", 1, T0 + 5000)
    for at in (T0 + 9000, T0 + 10_000):
        timeline.failed(A, at, "refused")
    # all down since the LAST one went down
    summary = timeline.summary()
    assert (summary.state, summary.down, summary.since) == ("down", 2, T0 + 9000)
    assert summary.to_json()["total"] == 2
    timeline.answered(A, T0 + 20_000, name="a", boot="a2")
    assert timeline.summary().state == "partial"


def test_it_survives_the_monitor_restarting() -> None:
    timeline = Timeline()
    timeline.resume(T0)
    timeline.answered(A, T0 + 1000, name="a", boot="a1")
    timeline.answered(B, T0 + 1000, name="b", boot="b1")
    timeline.failed(B, T0 + 2000, "refused")
    timeline.failed(B, T0 + 3000, "refused")
    document = json.loads(json.dumps(timeline.to_json()))  # as the archive keeps it

    again = Timeline.from_json(document)
    again.resume(T0 + 600_000)
    [started] = [e for e in again.events if e.kind == "monitor_started" and e.t == T0 + 600_000]
    assert started.duration_ms == 600_000 - 3000  # the time nobody watched
    assert again.tracks[B].health is Health.DOWN and again.tracks[A].health is Health.UP
    # B's outage is still open; it was not watched throughout
    [up] = again.answered(B, T0 + 601_000, name="b", boot="b2")
    assert up.duration_ms == 601_000 - 2000
    outage = again.outages[-1]
    assert outage.end == T0 + 601_000 and not outage.watched
    # A went down while the monitor was away: the start of that is unknown
    again.failed(A, T0 + 601_000, "refused")
    again.failed(A, T0 + 602_000, "refused")
    assert not again.outages[-1].start_known
    assert again.seq > timeline.seq  # event numbers go on


def test_a_damaged_document_is_refused() -> None:
    with pytest.raises(ValueError):
        Timeline.from_json({"format": 99})
    with pytest.raises(ValueError):
        Timeline.from_json({"format": 1, "seq": 1, "last_seen": 0, "tracks": [{"bogus": 1}]})


def test_it_stays_bounded() -> None:
    timeline = Timeline()
    nodes = [f"http://10.0.1.{i}:7780" for i in range(30)]
    at = T0
    for _ in range(MAX_OUTAGES_PER_NODE + 20):
        for node in nodes:
            timeline.answered(node, at, name="a", boot="a1")
            timeline.failed(node, at + 1, "refused")
            timeline.failed(node, at + 2, "refused")
        at += 10
    per_node = {n: sum(o.node == n for o in timeline.outages) for n in nodes}
    assert max(per_node.values()) <= MAX_OUTAGES_PER_NODE
    assert len(timeline.outages) == MAX_OUTAGES and len(timeline.events) == MAX_EVENTS
    assert max(sum(e.node == n for e in timeline.events) for n in nodes) <= MAX_EVENTS_PER_NODE
    # the nodes share the total evenly: none lost its outages to the others
    assert min(per_node.values()) >= MAX_OUTAGES // len(nodes) - 1
    assert len(json.dumps(timeline.to_json())) < 1_000_000
    # a document kept by an older monitor, with more in it, is cut the same way
    again = Timeline.from_json(json.loads(json.dumps(timeline.to_json())))
    assert len(again.outages) == MAX_OUTAGES and len(again.events) == MAX_EVENTS


def test_a_forgotten_node_leaves_no_open_outage() -> None:
    timeline = Timeline()
    timeline.answered(A, T0, name="a", boot="a1")
    timeline.failed(A, T0 + 1, "refused")
    timeline.failed(A, T0 + 2, "refused")
    timeline.forget(A, T0 + 100, "not in the etcd registry")
    assert A not in timeline.tracks and timeline.open_outage(A) is None
    assert timeline.outages[-1].end == T0 + 100
    assert timeline.summary().state == "no_nodes"
