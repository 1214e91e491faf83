"""A node that sends past its flow control is cut (`client/inflow.py`,
`client/nodesocket.py`): the client's socket takes every frame in, so
without this a dishonest node could grow the client's memory for as long
as it kept sending.

- the sans-IO count: bytes and frames past the last mark the node
  confirmed (the pong to its echo), marks remembered and confirmed;
- its bounds against the node's: far above what an honest node sends;
- a node in a child process (`tests/support/flooder.py`) that welcomes
  and then floods small pushes with no mark: the client reads as fast as
  it comes, cuts the connection, says why, connects again (and is cut
  again), and its memory stays within tens of MB while the node sends
  hundreds of thousands of frames.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import zmq
import zmq.utils.z85

from curvechat.client.connection import Connection
from curvechat.client.inflow import MARKS_KEPT, OVERRUN_BYTES, OVERRUN_FRAMES, Inflow
from curvechat.client.state import Backoff, ConnStatus
from curvechat.crypto import Identity
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import MAX_REPLY_BYTES
from curvechat.server.flow import MARK_EVERY, PER_CONNECTION

TESTS = Path(__file__).parent.parent


def test_bytes_past_the_last_confirmed_mark_are_bounded() -> None:
    flow = Inflow(max_bytes=1000, max_frames=100)
    assert flow.took(400) and flow.took(400)
    assert not flow.took(201)  # 1,001 bytes past the start
    assert "frames, 1001 bytes" in flow.overrun()


def test_frames_past_the_last_confirmed_mark_are_bounded() -> None:
    flow = Inflow(max_bytes=10**9, max_frames=3)
    assert all(flow.took(1) for _ in range(3))
    assert not flow.took(1)


def test_a_confirmed_mark_moves_the_count_on() -> None:
    flow = Inflow(max_bytes=1000, max_frames=100)
    assert flow.took(600)
    flow.marked(7)  # read at 600
    assert flow.took(300)
    flow.confirmed(7)
    assert (flow.sure_bytes, flow.sure_frames) == (600, 1)
    assert flow.took(700)  # 1,000 past the mark
    assert not flow.took(1)


def test_marks_not_read_or_older_than_the_confirmed_change_nothing() -> None:
    flow = Inflow(max_bytes=1000, max_frames=100)
    flow.took(100)
    flow.marked(1)
    flow.took(100)
    flow.marked(2)
    flow.confirmed(99)  # never read on this connection
    assert flow.sure_bytes == 0
    flow.confirmed(2)
    assert flow.sure_bytes == 200
    flow.confirmed(1)  # older: forgotten when 2 was confirmed
    assert flow.sure_bytes == 200


def test_only_the_newest_marks_are_remembered() -> None:
    flow = Inflow()
    for mark in range(1, MARKS_KEPT + 2):
        flow.took(10)
        flow.marked(mark)
    flow.confirmed(1)  # the oldest, forgotten
    assert flow.sure_bytes == 0
    flow.confirmed(2)
    assert flow.sure_bytes == 20


def test_the_bounds_are_far_above_an_honest_nodes() -> None:
    # An honest node withholds pushes past its budget beyond the last mark
    # it noted; one lost pong puts a client a budget and a mark behind.
    assert OVERRUN_BYTES >= 2 * (PER_CONNECTION + MARK_EVERY) + 2 * MAX_REPLY_BYTES
    assert OVERRUN_FRAMES * 64 >= PER_CONNECTION  # pushes of 64 bytes and more


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_a_node_that_floods_past_flow_control_is_cut_and_costs_little_memory() -> None:
    seconds, frames = 30.0, 300_000  # whichever comes first (about 5 s on a quiet machine)
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-m", "support.flooder", str(seconds), str(frames)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert child.stdout is not None
    port, public = child.stdout.readline().split()
    ident = Identity.generate("alice")
    statuses: list[ConnStatus] = []
    conn = Connection(
        [ServerAddress(f"tcp://127.0.0.1:{port}", public)],
        public_key=zmq.utils.z85.encode(ident.transport_pub),
        secret_key=zmq.utils.z85.encode(ident.transport_secret),
        on_push=lambda msg: None,
        on_status=statuses.append,
        backoff=Backoff(base=0.05, cap=0.5),
    )
    before = peak = _rss_mb()
    await conn.start()
    try:
        while child.poll() is None:
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.1)
    finally:
        await conn.close(goodbye=False)
    out, _ = child.communicate()
    connections, sent = (int(x) for x in out.split())
    cuts = [s for s in statuses if "does not keep to flow control" in s.detail]
    grown = peak - before
    print(f"{sent} frames sent, {connections} connections, {len(cuts)} cut; RSS +{grown:.0f} MB")
    assert sent >= 200_000, "the node sent too little to tell"
    assert cuts and connections >= 2  # cut, connected again, and cut again
    assert "65537 frames" in cuts[0].detail
    assert grown < 64, f"RSS grew {grown:.0f} MB while the node flooded"
