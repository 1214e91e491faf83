"""Which clients a node sends back to the node they pick (server/spread.py
with nodes that do not say their load, as older ones; the bounds on the
load are test_spread.py's), decided without sockets: the same choice as the
client's own order, only towards a node up long enough, never while this
node's listing leaves it out; and the driver (server/homing.py)."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

import pytest

from curvechat.client import servers as sv
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress, z85_encode
from curvechat.server.homing import ASK_AGAIN_S, Homing
from curvechat.server.ownership import Ownership
from curvechat.server.session import Session
from curvechat.server.spread import Peer, home, plan, up_peers

from support.fakenode import fake_node

NOW = 1_000_000
SETTLE = 30_000


def key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def peer(name: str, up_for_ms: int = 60_000) -> Peer:
    return Peer(name, key(name), NOW - up_for_ms)


def misplaced(
    sessions: list[tuple[bytes, str, int]], me: str, peers: list[Peer], **kwargs: Any
) -> list[bytes]:
    """Who `plan` asks to move: all of them home, none of the peers saying its load."""
    asks = plan(sessions, me, peers, mine=len(sessions), **kwargs).asks
    assert all(a.home for a in asks)
    return [a.routing_id for a in asks]


def user_at(home_of: str, peers: list[Peer], skip: int = 0) -> str:
    """A user name whose first choice among `peers` is `home_of`."""
    found = (u for u in (f"user{i}" for i in range(10_000)) if home(u, peers) == home_of)
    for _ in range(skip):
        next(found)
    return next(found)


def test_home_is_the_clients_own_first_choice() -> None:
    peers = [peer(n) for n in "abc"]
    addresses = [
        ServerAddress(f"tcp://127.0.0.1:{7700 + i}", z85_encode(p.key)) for i, p in enumerate(peers)
    ]
    for i in range(200):
        user = f"u{i:03d}"
        first = sv.attempt_order(user, addresses, addresses)[0]
        assert home(user, peers) == peers[addresses.index(first)].name


@pytest.mark.parametrize(
    ("home_of", "home_up_ms", "here_ms", "listed", "moved"),
    [
        ("b", 60_000, 60_000, "abc", True),  # its node is up and has been for a while
        ("b", SETTLE, SETTLE, "abc", True),  # exactly the settle time, both
        ("b", SETTLE - 1, 60_000, "abc", False),  # its node just came up: it may not stay
        # It just came here, maybe from b draining before the registry says so.
        ("b", 60_000, SETTLE - 1, "abc", False),
        ("a", 60_000, 60_000, "abc", False),  # already at home
        ("b", 60_000, 60_000, "bc", False),  # our own listing leaves us out: do nothing
    ],
)
def test_who_is_sent_back(
    home_of: str, home_up_ms: int, here_ms: int, listed: str, moved: bool
) -> None:
    everyone = [peer(n) for n in "abc"]
    user = user_at(home_of, everyone)
    peers = [peer(n, home_up_ms if n == home_of else 60_000) for n in listed]
    got = misplaced([(b"r1", user, NOW - here_ms)], "a", peers, now_ms=NOW, settle_ms=SETTLE)
    assert got == ([b"r1"] if moved else [])


def test_a_node_not_up_is_nobodys_home() -> None:
    """Draining (or unparsable) entries are left out: their users' next
    choice is their home meanwhile."""
    connect = {n: f"tcp://127.0.0.1:1/{z85_encode(key(n))}" for n in "abc"}
    entries = [("a", connect["a"], "up", 0, -1), ("b", connect["b"], "draining", 0, -1)]
    entries += [("c", connect["c"], "up", 0, -1), ("d", "not a connect string", "up", 0, -1)]
    assert [p.name for p in up_peers(entries)] == ["a", "c"]


def test_many_sessions_one_cache() -> None:
    peers = [peer(n) for n in "abc"]
    users = [user_at("b", peers, i) for i in range(5)] + [user_at("a", peers, i) for i in range(5)]
    sessions = [(f"r{i}".encode(), u, 0) for i, u in enumerate(users)]
    homes: dict[str, str] = {}
    got = misplaced(sessions, "a", peers, now_ms=NOW, settle_ms=SETTLE, homes=homes)
    assert got == [f"r{i}".encode() for i in range(5)]
    assert homes == {u: home(u, peers) for u in users}
    # A second session of a user already seen is decided by the cache.
    assert misplaced(
        [(b"again", users[0], 0)], "a", peers, now_ms=NOW, settle_ms=SETTLE, homes=homes
    ) == [b"again"]


def test_not_to_a_node_the_link_finds_unfit() -> None:
    peers = [peer(n) for n in "abc"]
    user = user_at("b", peers)
    args: dict[str, Any] = {"now_ms": NOW, "settle_ms": SETTLE}
    assert misplaced([(b"r1", user, 0)], "a", peers, **args) == [b"r1"]
    assert misplaced([(b"r1", user, 0)], "a", peers, unfit={"b"}, **args) == []
    own = Ownership("a", live=("a", "b", "c"))
    assert own.unfit(0.0) == set()
    own.set_slow("b", True)  # slow to reach etcd
    own.link_failed("c", 0.0)  # its link failed a moment ago
    assert own.unfit(0.0) == {"b", "c"}
    own.set_slow("a", True)  # this node itself is never "another node"
    assert "a" not in own.unfit(0.0)


def connect_strings() -> dict[str, str]:
    return {n: f"tcp://127.0.0.1:{7700 + i}/{z85_encode(key(n))}" for i, n in enumerate("abc")}


def test_the_driver_asks_each_user_once_in_a_while() -> None:
    connect = connect_strings()
    entries = [(n, c, "up", 0, -1) for n, c in connect.items()]
    node = fake_node(list(connect.values()))
    user = user_at("b", up_peers(entries))
    first = Session(routing_id=b"r1", transport_key="k", user=user, connected_ms=0)
    node.sessions[b"r1"] = first
    homing = Homing(node, lambda: entries, settle_s=30)  # type: ignore[arg-type]
    now_ms = int(time.time() * 1000)
    assert homing.tick(now_ms) == 1
    ((to, move),) = node.sent
    assert to == b"r1" and isinstance(move, m.Move)
    assert move.reason == "rebalance" and move.peers == list(connect.values())
    # Its first choice was out of its reach: it came back on a new connection.
    del node.sessions[b"r1"]
    node.sessions[b"r2"] = Session(routing_id=b"r2", transport_key="k", user=user, connected_ms=0)
    assert homing.tick(now_ms) == 0  # not again within ASK_AGAIN_S
    node.draining = True
    homing._asked_users.clear()
    assert homing.tick(now_ms) == 0  # a draining node asks for its own reason
    with pytest.raises(ValueError):
        Homing(node, lambda: entries, settle_s=5)  # type: ignore[arg-type]


def test_a_client_that_stays_when_asked_is_not_counted_on_its_way() -> None:
    """Each connection is asked once; one that stayed (a client without
    `push_move`) is planned again after ASK_AGAIN_S, not asked again, and
    still counts as here, not as on its way to its node."""
    connect = connect_strings()
    entries = [(n, c, "up", 0, -1) for n, c in connect.items()]
    node = fake_node(list(connect.values()))
    user = user_at("b", up_peers(entries))
    node.sessions[b"r1"] = Session(routing_id=b"r1", transport_key="k", user=user, connected_ms=0)
    homing = Homing(node, lambda: entries, settle_s=30)  # type: ignore[arg-type]
    now_ms = int(time.time() * 1000)
    assert homing.tick(now_ms, now=1000.0) == 1
    assert b"r1" in homing._in_transit
    later = 1000.0 + ASK_AGAIN_S + 1
    assert homing.tick(now_ms + 301_000, now=later) == 0  # planned, not asked again
    assert len(node.sent) == 1 and homing.asked == 1
    assert b"r1" not in homing._in_transit
    assert user in homing._asked_users  # and not planned at every look meanwhile


def test_the_driver_names_only_the_node_with_room_when_it_spreads() -> None:
    connect = connect_strings()
    node = fake_node(list(connect.values()))
    loads = {"a": 0, "b": 10, "c": 2}  # a's own count is its sessions: 20
    entries = [(n, c, "up", 0, loads[n]) for n, c in connect.items()]
    peers = up_peers(entries)
    for i, user in enumerate(user_at("a", peers, i) for i in range(20)):
        rid = f"r{i}".encode()
        node.sessions[rid] = Session(routing_id=rid, transport_key="k", user=user, connected_ms=0)
    homing = Homing(node, lambda: entries, settle_s=30)  # type: ignore[arg-type]
    now_ms = int(time.time() * 1000)
    # Uneven, but only since this look: nobody is asked before the settle time.
    assert homing.tick(now_ms, now=1000.0) == 0
    assert homing.tick(now_ms + 29_000, now=1029.0) == 0
    asked = homing.tick(now_ms + 30_000, now=1030.0)
    # Mean 32 / 3, c light: a gives down to the home cap (11), all into c's
    # room up to the cap (9, all a's part: a is the only node over the home floor).
    assert asked == 9 == homing.spread and homing.asked == 0
    said = Counter((mv.reason, tuple(mv.peers)) for _, mv in node.sent)
    assert said == {("spread", (connect["c"],)): 9}
    # They went; c now says 11. a (11) is at the cap: nobody else is asked.
    for to, _ in node.sent:
        del node.sessions[to]
    node.sent.clear()
    loads["c"] = 11
    entries[:] = [(n, c, "up", 0, loads[n]) for n, c in connect.items()]
    assert homing.tick(now_ms + 35_000, now=1035.0) == 0
