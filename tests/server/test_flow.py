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
