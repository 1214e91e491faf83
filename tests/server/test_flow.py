"""Flow control without sockets: budgets, marks, resync (server/flow.py)."""

from __future__ import annotations

import pytest

from curvechat.server.flow import Flow, FlowControl

KIB = 1024


def control() -> FlowControl:
    return FlowControl(per_connection=64 * KIB, node=96 * KIB, mark_every=16 * KIB)


def feed(fc: FlowControl, flow: Flow, pushes: int, size: int = 4 * KIB) -> list[int]:
    """Queue pushes the way the node does; returns the marks it asked for."""
    marks = []
    for _ in range(pushes):
        if fc.refuse_push(flow, size) is not None:
            continue
        mark = fc.queued(flow, size)
        if mark is not None:
            fc.marked(flow, mark, 20)
            marks.append(mark)
    return marks


def test_a_connection_that_does_not_read_is_capped() -> None:
    fc, flow = control(), Flow()
    feed(fc, flow, 100)
    assert flow.outstanding <= 64 * KIB and flow.withheld
    assert fc.refuse_push(flow, 4 * KIB) == "connection"


def test_reading_its_way_back_asks_for_a_resync_once() -> None:
    fc, flow = control(), Flow()
    marks = feed(fc, flow, 100)
    assert not fc.read(flow, 12345)  # a mark never sent counts for nothing
    assert fc.read(flow, marks[-1])  # read up to the last mark: resync
    assert not flow.withheld and flow.outstanding < 32 * KIB
    assert not fc.read(flow, marks[-1])  # once
    assert fc.refuse_push(flow, 4 * KIB) is None


def test_a_reader_is_never_held_back() -> None:
    fc, flow = control(), Flow()
    for _ in range(50):
        for mark in feed(fc, flow, 5):
            fc.read(flow, mark)
    assert not flow.withheld and fc.backlog == flow.outstanding < 32 * KIB


def test_the_node_budget_bites_on_those_that_do_not_read() -> None:
    fc = control()
    stalled = [Flow(), Flow()]
    for flow in stalled:
        feed(fc, flow, 100)
    reader = Flow()
    assert fc.backlog > 96 * KIB - 64 * KIB
    assert fc.refuse_push(reader, 4 * KIB) is None  # holds nothing: still served
    third = Flow()
    feed(fc, third, 6)  # 24 KiB, more than a mark's worth
    assert fc.refuse_push(third, 4 * KIB) == "node" and fc.node_limited
    for flow in stalled:
        fc.forget(flow)
    assert fc.backlog == third.outstanding + reader.outstanding


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError):
        FlowControl(per_connection=10, node=5, mark_every=1)


def test_replies_past_a_connections_budget_do_not_spend_the_nodes() -> None:
    """Replies (refusals, pongs) are queued whatever the budget: a connection
    that reads them but never confirms counts for its own budget and a mark
    at most, so that the node's budget stays for the pushes of others."""
    fc = FlowControl(per_connection=64 * KIB, node=128 * KIB, mark_every=16 * KIB)
    taker = Flow()
    for _ in range(1000):  # 1,000 refusals of 100 bytes each, never confirmed
        mark = fc.queued(taker, 100)
        if mark is not None:
            fc.marked(taker, mark, 20)
    assert taker.outstanding > 96 * KIB
    assert fc.backlog == (64 + 16) * KIB
    reader = Flow()
    feed(fc, reader, 5)  # 20 KiB, more than a mark: the node's budget applies to it
    assert fc.refuse_push(reader, 4 * KIB) is None  # 80 + 20 + 4 of 128
    fc.forget(taker)
    assert fc.backlog == reader.outstanding


@pytest.mark.parametrize("seed", range(40))
def test_room_for_a_run_is_refuse_push_one_after_the_other(seed: int) -> None:
    """`room_for` (a run of pushes at once, by bisection) agrees with
    `refuse_push` asked push by push, the run cut at the first refusal."""
    import random

    rnd = random.Random(seed)
    fc = FlowControl(per_connection=64 * KIB, node=96 * KIB, mark_every=8 * KIB)
    fc.backlog = rnd.randrange(0, 100 * KIB)
    sizes = [rnd.randrange(100, 12 * KIB) for _ in range(rnd.randrange(1, 20))]
    start = rnd.randrange(0, 70 * KIB)
    one, run = Flow(out=start), Flow(out=start)
    expected, scope = 0, None
    for size in sizes:
        before = sum(sizes[:expected])
        scope = fc.refuse_push(one, size, ahead=before, pending=before)
        if scope is not None:
            break
        expected += 1
    limited = fc.node_limited
    fc.node_limited = False
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert fc.room_for(run, ends) == (expected, scope)
    assert run.withheld == (scope is not None) and fc.node_limited == limited
