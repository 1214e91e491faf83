"""A chat node that reaches no etcd member sends its clients to the other
nodes, readers too, and takes no new client until etcd answers again; and
an etcd member cut off from the other two members stalls no send for its
whole call deadline. Real processes: a 3-member etcd, two chat nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from .conftest import Nodes
from support.clients import ClientFactory
from support.etcd import etcd_cluster
from support.raw import RawClient


@pytest.fixture
def fresh_nodes(tmp_path: Path) -> Iterator[Nodes]:
    with etcd_cluster(tmp_path / "etcd", size=3) as cluster:
        factory = Nodes(tmp_path, cluster)
        try:
            yield factory
        finally:
            factory.stop_and_check()


async def _until(cond: object, timeout: float) -> float:
    """Seconds until `cond()` holds (fails the test after `timeout`)."""
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


@pytest.mark.parametrize("how", ["killed", "frozen"])
async def test_cut_off_node_sends_readers_away_and_refuses_new_clients(
    fresh_nodes: Nodes, clients: ClientFactory, how: str
) -> None:
    """Node A reaches one etcd member only; it dies (connections refused) or
    hangs (silent). Carol, who only reads, is on A: she must move to B
    without sending anything, and get what bob sends there. A new client's
    hello to A is refused with store_unavailable; once the member is back, A
    takes clients again."""
    etcd = fresh_nodes.etcd
    lone = etcd.members[2]
    a = fresh_nodes.start("a", endpoints=lone.endpoint)
    b = fresh_nodes.start("b", endpoints=",".join(x.endpoint for x in etcd.members[:2]))
    bob, _ = await clients.make("bob", b.connect)
    carol, carol_events = await clients.make("carol", a.connect)  # learns B from A's welcome
    await bob.create_room("r", ["carol"])
    await carol_events.until(lambda: carol.cache.room("r") is not None)
    assert carol.status.endpoint == a.endpoint
    if how == "killed":
        lone.kill()
    else:
        lone.freeze()
    try:
        moved = await _until(
            lambda: carol.status.endpoint == b.endpoint and carol.status.state == "live", 20
        )
        await bob.send("r", "after the cut")
        await carol_events.until(
            lambda: [x.text for x in carol.cache.messages("r")] == ["after the cut"]
        )
        # A newcomer is turned away from A with a clear code.
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            raw = RawClient(ctx, a.connect, Identity.generate("dave"))
            reply = raw.request(m.Hello(client="test"), timeout=10)
            raw.close()
        finally:
            ctx.term()
        # (a key the node has not seen is refused before its hello is read,
        # when the node fails to look it up: the same code)
        assert isinstance(reply, m.Error) and reply.code == "store_unavailable", reply
    finally:
        if how == "killed":
            lone.restart()
        else:
            lone.thaw()
    etcd.wait_healthy(members=[lone])
    # A takes clients again.
    ctx2: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        deadline = time.monotonic() + 20
        while True:
            raw = RawClient(ctx2, a.connect, Identity.generate("erin"))
            reply = raw.request(m.Hello(client="test"), timeout=10)
            raw.close()
            if isinstance(reply, m.Welcome) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        ctx2.term()
    assert isinstance(reply, m.Welcome), reply
    assert "store_cut_off" in a.log() or "no etcd member answers" in a.log()
    # How long the move took: the probe's rounds, then the push.
    assert moved < (8 if how == "killed" else 12), moved
