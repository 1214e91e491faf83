"""Spread and rebalance (issue 17, item 2) on real processes: clients spread
over the nodes by rendezvous hashing of their user names, and the nodes
even out what the hash left uneven; a node that
drains (`curvechat drain`) moves its clients to the others while they send,
with every acknowledged message stored once, and once it takes clients
again the others send its clients back to it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import zmq
import zmq.utils.z85

from curvechat.client import servers as sv
from curvechat.client.engine import ChatClient
from curvechat.client.state import ConnState
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect

from .conftest import Nodes
from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess

EVEN_30 = 27
"""Fixed node keys make the spread of fixed names deterministic: with this
seed the preferred nodes of u00..u29 are 10, 11 and 9."""
UNEVEN_100 = 36
"""With this seed the preferred nodes of u000..u099 are 45, 36 and 19."""


def start_keyed(
    nodes: Nodes, name: str, index: int, extra: tuple[str, ...], key_seed: int
) -> ServerProcess:
    """A node whose CURVE key pair is derived from `key_seed` and `index`."""
    data = nodes.root / name
    data.mkdir(parents=True, mode=0o700)
    seed = hashlib.sha256(f"curvechat-spread-{key_seed}-{index}".encode()).digest()
    secret = zmq.utils.z85.encode(seed)
    fd = os.open(data / "server.key", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, secret)
    os.close(fd)
    (data / "server.pub").write_bytes(zmq.curve_public(secret))
    return nodes.start(name, extra=extra)


def three_nodes(
    nodes: Nodes, extra: tuple[str, ...], key_seed: int
) -> tuple[list[ServerProcess], str]:
    started = [
        start_keyed(nodes, name, i, extra, key_seed) for i, name in enumerate(("a", "b", "c"))
    ]
    (line,) = [x for x in started[-1].stdout if x.startswith("cluster connect string: ")]
    connect = line.split(": ", 1)[1].strip()
    assert len(parse_connect(connect)) == 3
    return started, connect


def api(node: ServerProcess, path: str, method: str = "GET", token: str = "") -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{node.http_port}{path}", method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def live_connections(node: ServerProcess) -> int:
    """Clients per node as the dashboard shows them (its connection table)."""
    return sum(1 for c in api(node, "/api/state")["connections"] if c["state"] == "live")


async def make_many(
    clients: ClientFactory, names: list[str], connect: str
) -> list[tuple[ChatClient, Recorder]]:
    made: list[tuple[ChatClient, Recorder]] = []
    for i in range(0, len(names), 20):
        made += await asyncio.gather(*(clients.make(u, connect) for u in names[i : i + 20]))
    return made


async def test_an_uneven_hash_is_evened_out(nodes: Nodes, clients: ClientFactory) -> None:
    """Node keys on which the users' first choices are 45, 36 and 19: the
    nodes publish their loads and, once the clients have been there
    `--rebalance-after` and the listings have called for a spread as long,
    the heavy node sends some to the light one. They end within 20 % of a
    third, nobody moved twice, and then nobody moves."""
    started, connect = three_nodes(nodes, ("--rebalance-after", "10"), UNEVEN_100)
    addresses = parse_connect(connect)
    names = [f"u{i:03d}" for i in range(100)]
    made = await make_many(clients, names, connect)
    third = len(names) / 3
    for (client, _), user in zip(made, names, strict=True):
        # Each is where the client core's own order puts it: its first choice.
        assert client.status.endpoint == sv.attempt_order(user, addresses, None)[0].endpoint

    def counts() -> list[int]:
        return [sum(c.status.endpoint == n.endpoint for c, _ in made) for n in started]

    def within(got: list[int]) -> bool:
        return all(abs(c - third) <= 0.2 * third for c in got) and sum(got) == len(names)

    first = counts()
    assert sorted(first) == [19, 36, 45] and not within(first)

    def moves() -> list[int]:
        """Each client's moves so far (a spread, or sent home)."""
        return [
            sum(
                1
                for e in events.events
                if type(e).__name__ == "StatusChanged"
                and e.status.moving
                and ("more than its share" in e.status.detail or "hands its" in e.status.detail)
            )
            for _, events in made
        ]

    t0 = time.monotonic()
    while not within(got := counts()):
        assert time.monotonic() - t0 < 90, got
        await asyncio.sleep(0.5)
    evened_s = time.monotonic() - t0
    # Then until nobody has moved for 12 s (two looks, and the counts
    # published meanwhile).
    seen, still = moves(), time.monotonic()
    while time.monotonic() - still < 12:
        assert time.monotonic() - t0 < 150, counts()
        await asyncio.sleep(0.5)
        if (now := moves()) != seen:
            seen, still = now, time.monotonic()
    last = counts()
    assert within(last), last
    assert [live_connections(n) for n in started] == last  # the dashboard counts the same
    print(f"\n100 clients from {first} to {got} in {evened_s:.1f} s; {last}, {sum(seen)} moves")
    assert max(seen) <= 1, seen  # nobody moved twice (spread, then sent back home)
    assert 0 < sum(seen) <= 20, seen  # 45 - 38 = 7 is the least that evens it out
    for client, _ in made:
        assert client.status.state is ConnState.LIVE


async def test_drain_moves_every_client_while_they_send(
    nodes: Nodes, clients: ClientFactory
) -> None:
    started, connect = three_nodes(nodes, (), EVEN_30)
    addresses = parse_connect(connect)
    names = [f"u{i:02d}" for i in range(30)]
    made = await make_many(clients, names, connect)
    rooms = {f"r{k}": names[10 * k : 10 * k + 10] for k in range(3)}
    for k, (room, members) in enumerate(rooms.items()):
        await made[10 * k][0].create_room(room, members[1:])
    for k, room in enumerate(rooms):
        for client, events in made[10 * k : 10 * k + 10]:
            await events.until(lambda c=client, r=room: c.cache.room(r) is not None)
    victim = max(started, key=lambda n: sum(c.status.endpoint == n.endpoint for c, _ in made))
    movers = [(c, e) for c, e in made if c.status.endpoint == victim.endpoint]
    assert movers
    token = (victim.data / "http.token").read_text().strip()
    # Draining needs the token, on loopback too; anything else is refused with a code.
    for method, auth in (("POST", ""), ("DELETE", ""), ("POST", "wrong-token-0123456789")):
        try:
            api(victim, "/api/drain", method, auth)
            raise AssertionError(f"{method} /api/drain without the right token was served")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
            assert json.loads(exc.read())["error"] == "unauthorized"
    assert api(victim, "/api/drain", token=token)["draining"] is False

    waits: list[asyncio.Future[m.SendAck]] = []
    sent: dict[str, list[str]] = {room: [] for room in rooms}

    async def send_round(n: int) -> None:
        for k, (room, members) in enumerate(rooms.items()):
            for (client, _), user in zip(made[10 * k : 10 * k + 10], members, strict=True):
                text = f"{user}-{n}"
                txn = await client.send(room, text, wait=False)
                sent[room].append(text)
                waits.append(asyncio.ensure_future(client.wait_ack(str(txn), timeout=60)))

    await send_round(0)
    await asyncio.wait(waits)
    t0 = time.monotonic()
    drain = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "curvechat",
        "drain",
        "--http",
        f"127.0.0.1:{victim.http_port}",
        "--data",
        str(victim.data),
        "--timeout",
        "60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for n in range(1, 6):  # sent while the node drains
        await send_round(n)
        await asyncio.sleep(0.1)
    out, err = await asyncio.wait_for(drain.communicate(), 90)
    drained_s = time.monotonic() - t0
    assert drain.returncode == 0, (out.decode(), err.decode())
    assert "drained in" in out.decode() and "no client left" in out.decode(), out.decode()
    print(f"\ndrain of {victim.endpoint} with {len(movers)} clients: {drained_s:.1f} s")
    print(out.decode().strip())

    acks = await asyncio.gather(*waits)
    for client, events in movers:
        assert client.status.endpoint != victim.endpoint
        # It may be on its way again (spread among the nodes left): live soon.
        await events.until(lambda c=client: c.status.state is ConnState.LIVE)
        assert client.status.state is ConnState.LIVE
        said = [e.status for e in events.events if type(e).__name__ == "StatusChanged"]
        assert any(s.moving and "draining" in s.detail for s in said), said[-5:]
    assert all(c.status.endpoint != victim.endpoint for c, _ in made)
    assert live_connections(victim) == 0
    # Every acknowledged message is stored once, at its acked seq.
    for k, (room, texts) in enumerate(rooms.items()):
        room_acks = sorted(a.seq for a in acks if a.room == room)
        assert room_acks == list(range(1, len(sent[room]) + 1))
        reader, events = made[10 * k + 9]
        await events.until(lambda c=reader, r=room, t=texts: stored(c, r) == len(sent[r]))
        history = [x.text for x in reader.cache.messages(room, limit=10_000)]
        assert sorted(history) == sorted(sent[room])  # each once
    # A new client whose first choice is the drained node is refused at once
    # (`draining`) and goes to its next choice.
    late = next(
        u
        for u in (f"late{i}" for i in range(1000))
        if sv.attempt_order(u, addresses, None)[0].endpoint == victim.endpoint
    )
    client, _ = await clients.make(late, connect)
    assert client.status.endpoint != victim.endpoint
    assert client.conn.failures.get(victim.endpoint) == sv.DRAINING
    # The registry says so, and the other nodes stop naming it as live.
    name = api(victim, "/api/state")["node"]["name"]
    other = next(n for n in started if n is not victim)
    for _ in range(100):
        peers = {p["name"]: p for p in api(other, "/api/nodes")["nodes"][1:]}
        if peers.get(name, {}).get("status") == "draining":
            break
        await asyncio.sleep(0.1)
    assert peers[name]["status"] == "draining"
    assert api(victim, "/api/state")["node"]["draining"] is True


def stored(client: ChatClient, room: str) -> int:
    return len(client.cache.messages(room, limit=10_000))


async def test_clients_go_back_to_their_node_once_it_is_up_again(
    nodes: Nodes, clients: ClientFactory
) -> None:
    """A node drains (its clients move to the others), then takes clients
    again: after `--rebalance-after` the other nodes ask its clients, and
    only them, to move back, and they do (in one move: the request names
    the live nodes, and lifts the client's memory of the drain). The node
    with the fewest clients drains: all of them fit under its bound when
    they come back (a node with more than its share takes back up to the
    bound, test_spread.py)."""
    # The least it may be: longer than a drain takes to reach the others (about 7 s).
    started, connect = three_nodes(nodes, ("--rebalance-after", "10"), EVEN_30)
    names = [f"u{i:02d}" for i in range(30)]
    made = await make_many(clients, names, connect)
    home = {user: str(c.status.endpoint) for (c, _), user in zip(made, names, strict=True)}
    await made[0][0].create_room("r", names[1:])
    for client, events in made:
        await events.until(lambda c=client: c.cache.room("r") is not None)
    victim = min(started, key=lambda n: sum(e == n.endpoint for e in home.values()))
    movers = [(c, e) for (c, e), u in zip(made, names, strict=True) if home[u] == victim.endpoint]
    stayers = [(c, e) for c, e in made if (c, e) not in movers]
    token = (victim.data / "http.token").read_text().strip()
    api(victim, "/api/drain", "POST", token)
    for client, events in movers:
        await events.until(lambda c=client: c.status.endpoint != victim.endpoint, timeout=30)
    assert live_connections(victim) == 0
    t0 = time.monotonic()
    api(victim, "/api/drain", "DELETE", token)  # takes clients again
    for client, events in movers:
        await events.until(
            lambda c=client: (
                c.status.endpoint == victim.endpoint and c.status.state is ConnState.LIVE
            ),
            timeout=60,
        )
    back_s = time.monotonic() - t0
    print(f"\n{len(movers)} clients back on their node {back_s:.1f} s after it took clients again")
    for _, events in movers:
        said = [e.status for e in events.events if type(e).__name__ == "StatusChanged"]
        assert any(s.moving and "hands its clients back" in s.detail for s in said), said[-5:]
        # Home, away once, home: no stop on a third node on the way back.
        visited = [s.endpoint for s in said if s.state is ConnState.LIVE]
        hops = [e for i, e in enumerate(visited) if i == 0 or e != visited[i - 1]]
        assert len(hops) == 3 and hops[0] == hops[2] == victim.endpoint, hops
    for client, events in stayers:
        said = [e.status for e in events.events if type(e).__name__ == "StatusChanged"]
        assert not any("hands its clients back" in s.detail for s in said)
        assert client.status.endpoint == home[client.identity.user], [
            (s.endpoint, s.detail) for s in said
        ]
    assert live_connections(victim) == len(movers)
    # They send from home as before.
    client, _ = movers[0]
    ack = await client.wait_ack(str(await client.send("r", "home again", wait=False)), timeout=30)
    assert ack.seq >= 1
