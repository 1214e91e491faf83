"""Room ownership in a real cluster: a node forwards a room's sends to the
room's owner over the node link, the owner commits them without contention,
and when the owner dies its rooms are taken over without a lost or doubled
message. The link admits only registered nodes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio
from chaos.proxy import ProxyHub

from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.server.linkwire import FORWARD_TIMEOUT_S, Forward, Forwarded
from curvechat.server.ownership import owner_of
from curvechat.store import NewMessage

from .conftest import Nodes
from .test_two_nodes import scrape, seqs_texts
from support.clients import ClientFactory
from support.servers import ServerProcess, serve_refuses


def name_of(node: ServerProcess) -> str:
    (line,) = [x for x in node.stdout if x.startswith("curvechat node ")]
    return line.split()[2]


def forwarded(node: ServerProcess, way: str) -> float:
    return scrape(node).get(f'curvechat_cluster_forwarded_messages_total{{way="{way}"}}', 0.0)


async def until_linked(a: ServerProcess, b: ServerProcess) -> None:
    """Until each node sees both and its link to the other is up (a link
    made before the other node knew its key is refused once, then retried)."""
    for node in (a, b):
        await until_nodes(node, 2)
    await asyncio.sleep(0.5)


async def two_nodes_and_a_room_of_b(nodes: Nodes) -> tuple[ServerProcess, ServerProcess, str]:
    """Nodes a and b, linked, and the name of a room that b owns."""
    a, b = nodes.start("a"), nodes.start("b")
    await until_linked(a, b)
    names = [name_of(a), name_of(b)]
    return a, b, next(f"r{i}" for i in range(100) if owner_of(f"r{i}", names) == names[1])


async def until_nodes(node: ServerProcess, n: int) -> None:
    for _ in range(100):
        if scrape(node)["curvechat_cluster_nodes"] == n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the node did not see {n} nodes")


async def test_sends_into_a_room_owned_by_the_other_node_are_forwarded(
    nodes: Nodes, clients: ClientFactory
) -> None:
    a, b, room = await two_nodes_and_a_room_of_b(nodes)
    alice, alice_events = await clients.make("alice", a.connect)
    carol, carol_events = await clients.make("carol", a.connect)
    bob, bob_events = await clients.make("bob", b.connect)
    await alice.create_room(room, ["bob", "carol"])
    for c, ev in ((bob, bob_events), (carol, carol_events)):
        await ev.until(lambda c=c: c.cache.room(room) is not None)
    # alice and carol (on A, not the owner) and bob (on B, the owner) at once
    acks = await asyncio.gather(
        *(alice.send(room, f"a{i}") for i in range(20)),
        *(carol.send(room, f"c{i}") for i in range(10)),
        *(bob.send(room, f"b{i}") for i in range(10)),
    )
    assert sorted(x.seq for x in acks if isinstance(x, m.SendAck)) == list(range(1, 41))
    for c, ev in ((alice, alice_events), (bob, bob_events), (carol, carol_events)):
        await ev.until(lambda c=c: len(c.cache.messages(room, limit=100)) == 40)
    expected = seqs_texts(bob, room)
    assert seqs_texts(alice, room) == seqs_texts(carol, room) == expected
    # A forwarded its 30, B committed them for A; nothing fell back, and no
    # commit on either node lost a compare-and-swap to the other.
    # (On a machine too busy to answer in 2 s a forward falls back; then, and
    # only then, may the two nodes race for the head.)
    assert forwarded(a, "out") + forwarded(a, "fallback") == 30
    assert forwarded(b, "in") >= forwarded(a, "out") >= 1 and forwarded(b, "out") == 0
    if forwarded(a, "fallback") == 0:
        assert scrape(a)["curvechat_cluster_cas_retries_total"] == 0
        assert scrape(b)["curvechat_cluster_cas_retries_total"] == 0
    # Each member got each message once, live: carol (on A) alice's through
    # A's own acks, bob (on B) through B's watch.
    for c_events, me in ((carol_events, "carol"), (bob_events, "bob")):
        live = [e.message.seq for e in c_events.events if type(e).__name__ == "MessageReceived"]
        others = {s for s, sender, _ in expected if sender != me}
        assert others <= set(live) and len(live) == len(set(live))


async def test_owner_killed_its_rooms_are_taken_over(nodes: Nodes, clients: ClientFactory) -> None:
    """kill -9 of a room's owner while a client on the other node sends into
    it: every send is acked once, in order, and the hand-over time (from the
    kill to the first ack committed without the owner) is printed."""
    a, b, room = await two_nodes_and_a_room_of_b(nodes)
    alice, _events = await clients.make("alice", a.connect)
    await alice.create_room(room, [])
    first = await asyncio.gather(*(alice.send(room, f"x{i}") for i in range(10)))
    assert all(isinstance(x, m.SendAck) for x in first)
    # forwarded to b (a machine too busy to answer in 2 s falls back instead)
    assert forwarded(a, "out") + forwarded(a, "fallback") == 10 and forwarded(a, "out") >= 1
    nodes.kill(b)
    t_kill = time.monotonic()
    ack = await alice.send(room, "after")
    handover = time.monotonic() - t_kill
    assert isinstance(ack, m.SendAck) and ack.seq == 11
    rest = await asyncio.gather(*(alice.send(room, f"y{i}") for i in range(10)))
    assert [x.seq for x in rest if isinstance(x, m.SendAck)] == list(range(12, 22))
    texts = [t for _, _, t in seqs_texts(alice, room)]
    assert texts == [f"x{i}" for i in range(10)] + ["after"] + [f"y{i}" for i in range(10)]
    print(f"hand-over after kill -9 of the owner: first ack in {handover:.2f} s")
    assert forwarded(a, "fallback") >= 1


async def test_the_link_commits_only_for_registered_nodes(nodes: Nodes) -> None:
    a = nodes.start("a")
    await until_nodes(a, 1)
    (line,) = [x for x in a.stdout if x.startswith("node link: ")]
    link = line.split(": ", 1)[1].strip()
    public, secret = zmq.curve_keypair()
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_serverkey = parse_connect(a.connect)[0].server_key.encode()
    sock.linger = 0
    sock.connect(link)
    try:
        await sock.send(b"\xc1 not msgpack")  # dropped; the link goes on
        await sock.send_multipart([b"two", b"frames"])
        fwd = Forward(1, "intruder", [NewMessage("r", "mallory", "t1", b"x")])
        await sock.send(msgspec.msgpack.encode(fwd))
        reply = msgspec.msgpack.decode(await asyncio.wait_for(sock.recv(), 5), type=Forwarded)
        assert reply.error == "NotANode" and reply.results == []
        assert forwarded(a, "in") == 0
    finally:
        sock.close()
        ctx.term()


async def test_a_hung_owner_costs_one_heartbeat(nodes: Nodes, clients: ClientFactory) -> None:
    """SIGSTOP of a room's owner: its link stays up but nothing answers. The
    sending node's forward gives up when the link's pings have gone
    unanswered for SILENT_S (well before FORWARD_TIMEOUT_S), it commits the
    send itself, and forwards nothing more to that owner while it stays
    silent; nothing is stored twice."""
    a, b, room = await two_nodes_and_a_room_of_b(nodes)
    alice, _events = await clients.make("alice", a.connect)
    await alice.create_room(room, [])
    await alice.send(room, "before")
    b.freeze()
    try:
        t0 = time.monotonic()
        ack = await alice.send(room, "hung 0")
        first = time.monotonic() - t0
        t1 = time.monotonic()
        acks = [await alice.send(room, f"hung {i}") for i in range(1, 6)]
        rest = time.monotonic() - t1
    finally:
        b.thaw()
    assert isinstance(ack, m.SendAck) and ack.seq == 2
    assert [x.seq for x in acks if isinstance(x, m.SendAck)] == [3, 4, 5, 6, 7]
    print(f"hung owner: first ack {first:.2f} s, the next five {rest:.2f} s")
    assert first < FORWARD_TIMEOUT_S, first
    # "before" went to b, "hung 0" fell back; "hung 1"-"hung 5" were not
    # forwarded at all (b unreachable): all six committed in b's place
    # ("before" may itself have been committed here if the link was not up yet)
    assert forwarded(a, "fallback") >= 6
    assert forwarded(a, "out") + forwarded(a, "fallback") == 7
    texts = [t for _, _, t in seqs_texts(alice, room)]
    assert texts == ["before"] + [f"hung {i}" for i in range(6)]


async def test_a_node_whose_etcd_is_slow_hands_its_rooms_and_clients_over(
    nodes: Nodes, clients: ClientFactory
) -> None:
    """Node b reaches etcd only through links that add 0.25 s each way. It
    finds its round trips slow: it stops owning rooms (a commits the sends
    into a room b owns, without forwarding them to b) and, since a is quick,
    asks its client to move there. Nothing is lost, doubled or reordered."""
    hub = ProxyHub()
    try:
        proxies = [hub.add(f"etcd{i}", mb.client_port) for i, mb in enumerate(nodes.etcd.members)]
        a = nodes.start("a")
        endpoints = ",".join(p.endpoint for p in proxies)
        b = nodes.start("b", endpoints=endpoints, extra=("--etcd-slow-ms", "120"))
        await until_linked(a, b)
        names = [name_of(a), name_of(b)]
        room = next(f"r{i}" for i in range(100) if owner_of(f"r{i}", names) == names[1])
        alice, alice_events = await clients.make("alice", b.connect)
        bob, _ = await clients.make("bob", a.connect)
        await alice.create_room(room, ["bob"])
        await alice.send(room, "before")
        assert alice.status.endpoint == b.endpoint
        for proxy in proxies:
            proxy.set(latency=0.25)
        t0 = time.monotonic()
        await alice_events.until(lambda: alice.status.endpoint == a.endpoint, timeout=20)
        moved = time.monotonic() - t0
        assert "etcd round trips take" in b.log(), b.log()[-2000:]
        assert "(over 120 ms)" in b.log()  # its --etcd-slow-ms
        await asyncio.sleep(0.5)  # a hears it in b's next ping answers
        assert "its etcd is slow, it says" in a.log()
        out_before = forwarded(a, "out")
        t1 = time.monotonic()
        acks = [await alice.send(room, f"slow {i}") for i in range(5)]
        acks += [await bob.send(room, f"bob {i}") for i in range(3)]
        print(
            f"slow node: its client moved {moved:.2f} s after the links slowed;"
            f" eight acks in {time.monotonic() - t1:.2f} s"
        )
        assert all(isinstance(x, m.SendAck) for x in acks)
        assert forwarded(a, "out") == out_before  # a stood in for b, forwarding nothing
        assert forwarded(a, "fallback") >= 8
        for proxy in proxies:
            proxy.set(latency=0.0)
        texts = [t for _, _, t in seqs_texts(bob, room)]
        sent = [f"slow {i}" for i in range(5)] + [f"bob {i}" for i in range(3)]
        assert texts == ["before", *sent]
    finally:
        hub.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--link-bind", "tcp://127.0.0.1:7701"], "--link-bind needs --store"),
        (["--store", "etcd://h:2379", "--link-bind", "127.0.0.1:7701"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-bind", "tcp://h:port"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-bind", "tcp://h:1/x"], "tcp://HOST:PORT"),
        (["--link-advertise", "tcp://10.0.0.1:7701"], "--link-advertise needs --store"),
        (["--store", "etcd://h:2379", "--link-advertise", "tcp://h:*"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-advertise", "tcp://h:0"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-advertise", "tcp://h:70000"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-advertise", "tcp://a,b:7701"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-advertise", "tcp://u@h:7701"], "tcp://HOST:PORT"),
        (["--store", "etcd://h:2379", "--link-advertise", "tcp://0.0.0.0:7701"], "not 0.0.0.0"),
        (["--etcd-slow-ms", "200"], "--etcd-slow-ms needs --store"),
        (["--store", "etcd://h:2379", "--etcd-slow-ms", "5"], "must be 10 … 60000"),
        (["--store", "etcd://h:2379", "--etcd-slow-ms", "60001"], "must be 10 … 60000"),
        (["--store", "etcd://h:2379", "--etcd-slow-ms", "-1"], "must be 10 … 60000"),
        (["--rebalance-after", "30"], "--rebalance-after needs --store"),
        (["--store", "etcd://h:2379", "--rebalance-after", "-1"], "0 (never) or 10 … 86400"),
        (["--store", "etcd://h:2379", "--rebalance-after", "5"], "0 (never) or 10 … 86400"),
        (["--store", "etcd://h:2379", "--rebalance-after", "nan"], "0 (never) or 10 … 86400"),
        (["--store", "etcd://h:2379", "--rebalance-after", "1e9"], "0 (never) or 10 … 86400"),
    ],
)
def test_serve_refuses_a_bad_cluster_flag(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    serve_refuses(args, expected, capsys, tmp_path)
