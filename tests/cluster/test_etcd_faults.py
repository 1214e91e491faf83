"""A chat node through etcd faults: the Raft leader killed, quorum lost.
Each test has its own 3-member etcd cluster, since it breaks it."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curvechat.client import events as ev
from curvechat.client.errors import RequestTimeout
from curvechat.protocol import messages as m

from .conftest import Nodes
from support.clients import ClientFactory
from support.etcd import EtcdCluster, etcd_cluster
from support.servers import ServerProcess


@pytest.fixture
def fresh_nodes(tmp_path: Path) -> Iterator[Nodes]:
    with etcd_cluster(tmp_path / "etcd", size=3) as cluster:
        factory = Nodes(tmp_path, cluster)
        try:
            yield factory
        finally:
            factory.stop_and_check()


async def alice_and_bob(clients: ClientFactory, alice_at: str, bob_at: str) -> tuple[Any, Any, Any]:
    """Alice and bob connected where asked, in a room "r" alice made."""
    alice, _ = await clients.make("alice", alice_at)
    bob, bob_events = await clients.make("bob", bob_at)
    await alice.create_room("r", ["bob"])
    return alice, bob, bob_events


def store_unavailable_replies(node: ServerProcess) -> float:
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if not line.startswith("#") and 'code="store_unavailable"' in line
    )


async def test_kill_etcd_leader_sends_stall_then_continue(
    fresh_nodes: Nodes, clients: ClientFactory
) -> None:
    node = fresh_nodes.start("a")
    alice, bob, bob_events = await alice_and_bob(clients, node.connect, node.connect)
    for i in range(5):
        await alice.send("r", f"before {i}")
    leader = fresh_nodes.etcd.leader()
    leader.kill()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    acks = [await alice.send("r", f"after {i}", timeout=30) for i in range(5)]
    stalled = loop.time() - t0
    assert [a.seq for a in acks if isinstance(a, m.SendAck)] == [6, 7, 8, 9, 10]
    assert stalled < 20, f"sends stalled {stalled:.1f} s after the leader died"
    await bob_events.until(lambda: len(bob.cache.messages("r", limit=100)) == 10)
    assert [x.seq for x in bob.cache.messages("r", limit=100)] == list(range(1, 11))


@pytest.mark.parametrize("which", ["leader", "follower"])
async def test_hung_etcd_member_sends_continue(
    fresh_nodes: Nodes, clients: ClientFactory, which: str
) -> None:
    """A member that hangs (SIGSTOP: its connections stay open, nothing is
    answered) must not stall sends for long: the node avoids it after a call
    to it fails. Each message is acknowledged once, in order."""
    etcd: EtcdCluster = fresh_nodes.etcd
    node = fresh_nodes.start("a")
    alice, bob, bob_events = await alice_and_bob(clients, node.connect, node.connect)
    await alice.send("r", "before")
    leader = etcd.leader()
    victim = leader if which == "leader" else next(m for m in etcd.members if m is not leader)
    victim.freeze()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        acks = [await alice.send("r", f"hung {i}", timeout=60) for i in range(10)]
        stalled = loop.time() - t0
    finally:
        victim.thaw()
    assert [a.seq for a in acks if isinstance(a, m.SendAck)] == list(range(2, 12))
    # A functional bound, not a benchmark: with the hung member in rotation
    # sends stalled about a minute; avoided, they stall a deadline or two.
    assert stalled < 25, f"10 sends took {stalled:.1f} s with a hung etcd {which}"
    await bob_events.until(lambda: len(bob.cache.messages("r", limit=100)) == 11)


async def test_node_cut_off_from_etcd_clients_move_on(
    fresh_nodes: Nodes, clients: ClientFactory
) -> None:
    """Node A talks to one etcd member only, and that member dies: A still
    answers pings but every send gets store_unavailable. Its clients must
    not stay there: after a few refusals in a row they try another node (or
    A tells them to move first)."""
    etcd: EtcdCluster = fresh_nodes.etcd
    lone = etcd.members[2]
    a = fresh_nodes.start("a", endpoints=lone.endpoint)
    b = fresh_nodes.start("b", endpoints=",".join(x.endpoint for x in etcd.members[:2]))
    # Alice is given A only (a two-node string would spread her by her name):
    # she learns B from A's welcome.
    alice, alice_events = await clients.make("alice", a.connect)
    await clients.make("bob", b.connect)
    await alice.create_room("r", ["bob"])
    assert alice.status.endpoint == a.endpoint
    lone.kill()
    ack = await alice.send("r", "through whichever node can store it", timeout=60)
    assert isinstance(ack, m.SendAck) and ack.seq == 1
    # If B owns the room, A forwarded the send to B and it was stored at
    # once; she still does not stay on A, which cannot watch for new messages.
    await alice_events.until(lambda: alice.status.endpoint == b.endpoint, timeout=30)
    # She left after three refusals in a row, or A sent her away first once
    # it found no etcd member answering (server/storeguard.py), whichever
    # came first.
    refused = any("store is unavailable" in p.message for p in alice_events.of(ev.Problem))
    assert (refused and store_unavailable_replies(a) >= 3) or "no etcd member answers" in a.log()


async def test_quorum_lost_store_unavailable_then_resume(
    fresh_nodes: Nodes, clients: ClientFactory
) -> None:
    etcd: EtcdCluster = fresh_nodes.etcd
    node = fresh_nodes.start("a")
    alice, bob, bob_events = await alice_and_bob(clients, node.connect, node.connect)
    await alice.send("r", "first")
    await bob_events.until(lambda: [x.text for x in bob.cache.messages("r")] == ["first"])
    down = etcd.members[1:]
    for member in down:
        member.kill()
    txn = str(await alice.send("r", "while down", wait=False))
    with pytest.raises(RequestTimeout):
        await alice.wait_ack(txn, timeout=8)  # never a false ack
    assert store_unavailable_replies(node) >= 1  # the node said so, clearly
    assert [x.text for x in bob.cache.messages("r")] == ["first"]
    for member in down:
        member.restart()
    etcd.wait_healthy()
    ack = await alice.wait_ack(txn, timeout=30)
    assert ack.seq == 2
    await bob_events.until(lambda: len(bob.cache.messages("r")) == 2)
    assert [(x.seq, x.text) for x in bob.cache.messages("r")] == [(1, "first"), (2, "while down")]


async def test_node_cut_off_past_compaction_relists(
    fresh_nodes: Nodes, clients: ClientFactory
) -> None:
    etcd = fresh_nodes.etcd
    lone = etcd.members[2]
    a = fresh_nodes.start("a", endpoints=",".join(m.endpoint for m in etcd.members[:2]))
    b = fresh_nodes.start("b", endpoints=lone.endpoint)  # B talks to one member only
    alice, bob, bob_events = await alice_and_bob(clients, a.connect, b.connect)
    await bob_events.until(lambda: bob.cache.room("r") is not None)
    await alice.send("r", "m0")
    await bob_events.until(lambda: len(bob.cache.messages("r")) == 1)
    lone.kill()  # B's watch is cut off; A goes on with the other two members
    for i in range(1, 6):
        await alice.send("r", f"m{i}")
    etcd.compact()  # past B's last revision
    lone.restart()
    etcd.wait_healthy(members=[lone])
    # B re-lists and pushes the newest message; bob fetches the gap by seq.
    await bob_events.until(lambda: len(bob.cache.messages("r")) == 6, timeout=30)
    assert [(x.seq, x.text) for x in bob.cache.messages("r")] == [
        (i + 1, f"m{i}") for i in range(6)
    ]
    # (B, reaching no member, may have sent bob to A meanwhile, where he
    # fetched the messages: B re-lists all the same once its member is back.)
    for _ in range(150):
        if "re-listing" in b.log():
            break
        await asyncio.sleep(0.1)
    assert "re-listing" in b.log()
