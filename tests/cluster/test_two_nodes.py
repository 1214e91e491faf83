"""Two chat nodes on one etcd cluster: cross-node fan-out in one order, and
client failover when a node is killed."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from curvechat.client import events as ev
from curvechat.protocol import messages as m

from .conftest import Nodes
from support.cli import CliUser
from support.clients import ClientFactory
from support.servers import ServerProcess


async def until_they_see(room, made):  # type: ignore[no-untyped-def]
    """Until each of `made` (client, its events) has `room` in its cache."""
    for client, events in made:
        await events.until(lambda c=client: c.cache.room(room) is not None)


def seqs_texts(client, room):  # type: ignore[no-untyped-def]
    return [(x.seq, x.sender, x.text) for x in client.cache.messages(room, limit=10_000)]


async def test_message_via_a_reaches_members_on_b_in_order(
    nodes: Nodes, clients: ClientFactory
) -> None:
    a, b = nodes.start("a"), nodes.start("b")
    # B's connect string for the whole cluster names both nodes (from the registry).
    (line,) = [x for x in b.stdout if x.startswith("cluster connect string: ")]
    assert sorted(line.split(": ", 1)[1].strip().split(",")) == sorted([a.connect, b.connect])
    alice, alice_events = await clients.make("alice", a.connect)
    bob, bob_events = await clients.make("bob", b.connect)
    carol, carol_events = await clients.make("carol", b.connect)
    await alice.create_room("general", ["bob", "carol"])
    # B learns of the room from etcd's watch and tells its members.
    await until_they_see("general", [(bob, bob_events), (carol, carol_events)])
    # Alice (on A) and bob (on B) send concurrently; everyone sees one order.
    acks = await asyncio.gather(
        *(alice.send("general", f"a{i}") for i in range(10)),
        *(bob.send("general", f"b{i}") for i in range(10)),
    )
    assert sorted(a.seq for a in acks if isinstance(a, m.SendAck)) == list(range(1, 21))
    for client, events in ((alice, alice_events), (bob, bob_events), (carol, carol_events)):
        await events.until(lambda c=client: len(c.cache.messages("general", limit=100)) == 20)
    expected = seqs_texts(bob, "general")
    assert [s for s, _, _ in expected] == list(range(1, 21))
    assert seqs_texts(carol, "general") == expected
    assert seqs_texts(alice, "general") == expected
    # Carol got bob's and alice's messages live from B: from B's own pushes
    # if B owns the room, else through B's watch of A's commits.
    live = [e for e in carol_events.events if type(e).__name__ == "MessageReceived"]
    assert {e.message.sender for e in live if e.live} == {"alice", "bob"}
    # The node that does not own the room had the room's 20 messages through
    # its watch (and measured their lag); both see two nodes.
    lag = "curvechat_cluster_watch_lag_seconds_count"
    assert scrape(a)[lag] + scrape(b)[lag] >= 10
    assert scrape(b)["curvechat_cluster_nodes"] == 2


def scrape(node: ServerProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


async def test_kill_a_chat_node_while_20_clients_send(nodes: Nodes, clients: ClientFactory) -> None:
    """kill -9 of node A while 20 clients send: those on A fail over to B,
    ten of them knowing only A's connect string (they learned B from the
    registry through their welcome). Every acknowledged message is stored
    exactly once at its acked seq, and every client ends with one history."""
    b = nodes.start("b")
    a = nodes.start("a")  # B is registered by now: A's first welcome names it
    users = [f"u{i:02d}" for i in range(20)]
    made = []
    for i, user in enumerate(users):
        # u00..u09 know only A; u10..u14 know both, A first; u15..u19 are on B.
        connect = a.connect if i < 10 else f"{a.connect},{b.connect}" if i < 15 else b.connect
        made.append(await clients.make(user, connect))
    for client, _ in made[:10]:
        assert [x.endpoint for x in client.conn.addresses] == [a.endpoint, b.endpoint]
    owner = made[0][0]
    await owner.create_room("ops", users[1:])
    await until_they_see("ops", made[1:])
    per_client = 12
    waits: list[asyncio.Future[m.SendAck]] = []

    async def send_round(n: int) -> None:
        for (client, _), user in zip(made, users, strict=True):
            txn = await client.send("ops", f"{user}-{n}", wait=False)
            waits.append(asyncio.ensure_future(client.wait_ack(str(txn), timeout=60)))

    for n in range(per_client // 2):
        await send_round(n)
    await asyncio.wait(waits[:20])  # the first round is acknowledged...
    nodes.kill(a)
    # ...and the rest are sent while A's clients are failing over: queued
    # or in flight when A dies, each is stored once, in each sender's order.
    for n in range(per_client // 2, per_client):
        await send_round(n)
    acks = await asyncio.gather(*waits)
    total = per_client * len(users)
    assert sorted(x.seq for x in acks) == list(range(1, total + 1))  # no seq twice
    for client, _ in made[:15]:
        assert client.status.endpoint == b.endpoint
        assert client.pending() == []
    for client, events in made:
        await events.until(
            lambda c=client: len(c.cache.messages("ops", limit=10_000)) == total, timeout=60
        )
    expected = seqs_texts(made[-1][0], "ops")
    assert sorted(t for _, _, t in expected) == sorted(
        f"{u}-{n}" for u in users for n in range(per_client)
    )  # each acknowledged message once
    for client, _ in made:
        assert seqs_texts(client, "ops") == expected
    # Each client's messages are stored in the order it sent them.
    for user in users:
        mine = [t for _, s, t in expected if s == user]
        assert mine == [f"{user}-{n}" for n in range(per_client)]


async def test_a_leave_through_one_node_is_told_as_a_leave_on_the_other(
    nodes: Nodes, clients: ClientFactory
) -> None:
    """The node that took the leave says `left` to the leaver's connections
    on it; another node learns of the change from etcd and says the same,
    from the op, to the leaver's connections on it (and `removed` for a
    removal)."""
    a, b = nodes.start("a"), nodes.start("b")
    carol, _ = await clients.make("carol", a.connect)
    on_a, _ = await clients.make("alice", a.connect)
    on_b, b_events = await clients.make("alice", b.connect)
    dave_b, dave_events = await clients.make("dave", b.connect)
    await carol.create_room("r", ["alice", "dave"])
    await until_they_see("r", [(on_b, b_events), (dave_b, dave_events)])

    def gone(events, room):  # type: ignore[no-untyped-def]
        return [
            e.reason
            for e in events.of(ev.RoomUpdated)
            if e.room == room and e.reason in ("left", "removed")
        ]

    await on_a.leave("r")
    await b_events.until(lambda: bool(gone(b_events, "r")), 15)
    await carol.remove("r", "dave")
    await dave_events.until(lambda: bool(gone(dave_events, "r")), 15)
    await asyncio.sleep(0.5)
    assert gone(b_events, "r") == ["left"]
    assert gone(dave_events, "r") == ["removed"]


def test_another_node_of_the_homes_cluster_is_not_told_as_another_server(
    nodes: Nodes, tmp_path: Path
) -> None:
    """A home moved from one node to another of the same cluster: nothing
    is said, since the home kept the nodes the first one's welcome named
    (tests/cli/test_connect_string.py says it for another server)."""
    a, b = nodes.start("a"), nodes.start("b")
    alice = CliUser("alice", tmp_path / "alice", a)
    alice.run("init", "--user", "alice")
    kept = (alice.home / "server").read_text()
    assert a.connect in kept and b.connect in kept
    moved = alice.run("rooms", "--server", b.connect, server=False)
    assert "is not the server this home used last" not in moved.stderr, moved.stderr
