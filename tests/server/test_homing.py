"""Which clients a node sends back to the node they pick (server/homing.py),
decided without sockets: the same choice as the client's own order, only
towards a node up long enough, never while this node's listing leaves it out."""

from __future__ import annotations

import hashlib

import pytest

from curvechat.client import servers as sv
from curvechat.protocol.connect import ServerAddress, z85_encode
from curvechat.server.homing import Peer, home, misplaced, up_peers

NOW = 1_000_000
SETTLE = 30_000


def key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def peer(name: str, up_for_ms: int = 60_000) -> Peer:
    return Peer(name, key(name), NOW - up_for_ms)


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
    entries = [("a", connect["a"], "up", 0), ("b", connect["b"], "draining", 0)]
    entries += [("c", connect["c"], "up", 0), ("d", "not a connect string", "up", 0)]
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
