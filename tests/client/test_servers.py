"""The sans-IO side of reaching a server (issue 15, item 1): which node goes
first, when the next one is tried at once, and what the failed attempts
say together; and what the cache remembers of the node that answered."""

from __future__ import annotations

from pathlib import Path

import zmq

from curvechat.client import servers as sv
from curvechat.client.cache import Cache
from curvechat.client.recall import LAST_NODE, last_sync_ms, remembered_live, remembered_node
from curvechat.protocol.connect import ServerAddress, format_connect, parse_connect


def _addresses(n: int) -> list[ServerAddress]:
    text = ",".join(
        f"tcp://127.0.0.1:{7700 + i}/{zmq.curve_keypair()[0].decode()}" for i in range(n)
    )
    return parse_connect(text)


def _user_ranking(nodes: list[ServerAddress]) -> str:
    """A user name whose rendezvous order over `nodes` is their given order."""
    return next(
        u for u in (f"u{i}" for i in range(10_000)) if sv.attempt_order(u, nodes, None) == nodes
    )


def test_nodes_are_ranked_by_rendezvous_score_of_the_user_name() -> None:
    nodes = _addresses(3)
    for user in ("alice", "bob", "carol"):
        ranked = sv.attempt_order(user, nodes, None)
        assert ranked == sorted(nodes, key=lambda a, u=user: -sv.score(u, a))  # type: ignore[misc]
        assert sv.attempt_order(user, nodes[::-1], None) == ranked  # the given order is no matter
    assert sv.attempt_order("", nodes, None) == nodes  # no key: the given order
    # The score hangs on the node's key, not on how its address is spelled.
    (a,) = nodes[:1]
    assert sv.score("alice", ServerAddress("tcp://localhost:1", a.server_key)) == sv.score(
        "alice", a
    )


def test_live_nodes_rank_before_the_others_and_draining_ones_last() -> None:
    a, b, c = nodes = _addresses(3)
    user = _user_ranking(nodes)
    assert sv.attempt_order(user, nodes, [b, c]) == [b, c, a]  # a not named live: probably down
    assert sv.attempt_order(user, nodes, None, {a}) == [b, c, a]
    assert sv.attempt_order(user, nodes, [a, b], {a}) == [b, c, a]  # draining: even after down
    # The node that answered last goes first while no welcome named the live
    # nodes (a single node, or several names of one), and only then.
    assert sv.attempt_order(user, nodes, None, last=c) == [c, a, b]
    assert sv.attempt_order(user, nodes, [a, b, c], last=c) == [a, b, c]
    assert sv.prefer([a, b], c) == [c, a, b] and sv.prefer([a, b], None) == [a, b]


def test_users_spread_evenly_and_a_node_leaving_moves_only_its_own() -> None:
    nodes = _addresses(3)
    users = [f"user{i}" for i in range(6000)]
    first = {u: sv.attempt_order(u, nodes, None)[0] for u in users}
    counts = [sum(1 for u in users if first[u] == n) for n in nodes]
    assert all(abs(c - 2000) < 200 for c in counts), counts  # 5.5 standard deviations
    gone = nodes[0]
    after = {u: sv.attempt_order(u, nodes, nodes[1:])[0] for u in users}
    assert all(after[u] == first[u] for u in users if first[u] != gone)  # the others stay
    moved = [after[u] for u in users if first[u] == gone]
    assert abs(moved.count(nodes[1]) - moved.count(nodes[2])) < 0.2 * len(moved)  # evenly


def test_the_server_list_learns_marks_and_walks_round() -> None:
    a, b, c = nodes = _addresses(3)
    user = _user_ranking(nodes)
    servers = sv.ServerList([a, b], key=user)
    assert servers.order(0.0) == [a, b] and servers.live is None
    servers.learn([])  # a single node names no peers: nothing changes
    assert servers.live is None
    servers.learn([c.legacy, b.legacy, "not a connect string"])
    assert servers.learned == [c] and servers.live == [c, b]
    assert servers.order(0.0) == [b, c, a]
    assert [servers.after(x, 0.0) for x in (b, c, a)] == [c, a, b]
    servers.mark_draining(b, now=100.0)
    assert servers.order(100.0) == [c, a, b]
    assert servers.first(100.0 + sv.DRAIN_AVOID_S - 1) == c
    assert servers.first(100.0 + sv.DRAIN_AVOID_S + 1) == b  # avoided for a while only
    assert servers.after(b, 100.0) == c  # it fell to the back: the round starts over
    # A connection that ends goes to the most preferred other node, not the
    # next after it: a client on its second choice goes back to its first.
    assert servers.instead_of(c, 100.0 + sv.DRAIN_AVOID_S + 1) == b
    assert servers.after(c, 100.0 + sv.DRAIN_AVOID_S + 1) == a
    assert sv.ServerList([a]).instead_of(a, 0.0) == a


def test_what_an_earlier_welcome_named_ranks_after_the_given_nodes() -> None:
    """The last run's welcome named c (not in the connect string) and a: c
    is known, for when the given nodes fail, but tried after them until a
    welcome of this run names it; the node that answered last counts only
    if it was given."""
    a, b, c = nodes = _addresses(3)
    user = next(
        u for u in (f"u{i}" for i in range(10_000)) if sv.attempt_order(u, nodes, None) == [c, b, a]
    )
    servers = sv.ServerList([a, b], key=user)
    servers.recall([c.legacy, a.legacy], c)
    assert servers.learned == [c] and servers.live == [a] and servers.last is None
    assert servers.order(0.0) == [a, c, b]  # b and c not named live: by score
    servers = sv.ServerList([a, b], key=user)
    servers.recall([c.legacy], c)  # no given node among them: as if none were named
    assert servers.live is None and servers.order(0.0) == [b, a, c]
    servers.recall([], b)
    assert servers.order(0.0) == [b, a, c]
    servers.learn([c.legacy, a.legacy])  # a welcome of this run names c: live again
    assert servers.order(0.0) == [c, a, b]


def test_a_rebalance_sends_the_client_home_past_an_old_drain_mark() -> None:
    """Connected to c while b (its first choice) drained, the client knows b
    only as draining. When c asks it to move back (`push_move` naming the
    live nodes, b among them), b is its first choice again, not a."""
    a, b, c = nodes = _addresses(3)
    user = next(
        u for u in (f"u{i}" for i in range(10_000)) if sv.attempt_order(u, nodes, None) == [b, c, a]
    )
    servers = sv.ServerList(nodes, key=user)
    servers.mark_draining(b, now=0.0)  # b drained: the client went to c
    servers.learn([c.legacy, a.legacy])  # c's welcome, while b was away
    assert servers.instead_of(c, 10.0) == a
    servers.learn([c.legacy, b.legacy, a.legacy], moving=True)  # c: "rebalance"
    servers.mark_draining(c, now=10.0)  # what a move does to the node that asked
    assert servers.order(10.0) == [b, a, c]
    servers.learn([c.legacy, a.legacy])  # a welcome does not clear marks
    servers.mark_draining(b, now=20.0)
    assert servers.first(20.0) == a


def test_a_spread_sends_the_client_to_the_one_node_it_names() -> None:
    """On c (its first choice), asked to go to a (`spread`, naming only a):
    the client goes to a, keeps knowing every node, does not take c for a
    draining node, and a's welcome makes them all live again."""
    a, b, c = nodes = _addresses(3)
    user = next(
        u for u in (f"u{i}" for i in range(10_000)) if sv.attempt_order(u, nodes, None) == [c, b, a]
    )
    servers = sv.ServerList(nodes, key=user)
    servers.learn([c.legacy, b.legacy, a.legacy])
    servers.learn([a.legacy], moving=True)
    assert "spread" in sv.DIRECTED and "draining" not in sv.DIRECTED
    assert servers.instead_of(c, 0.0) == a
    assert set(servers.all) == {a, b, c}
    assert servers.order(0.0) == [a, c, b]  # a first; then by score, c not last
    servers.learn([a.legacy, b.legacy, c.legacy])  # a's welcome
    assert servers.order(0.0) == [c, b, a]
    assert sv.moving_detail("n1", "spread").startswith("node n1 has more than its share")


def test_the_status_says_why_the_client_moves() -> None:
    assert sv.moving_detail("n1", "draining") == "node n1 is draining: moving to another node"
    assert sv.moving_detail("n1", "store_unreachable").startswith("node n1 cannot reach its store")
    assert "asks its clients to move (future_reason)" in sv.moving_detail("n1", "future_reason")
    assert sv.moving_detail("n1", "rebalance").startswith("node n1 hands its clients back")


def test_within_a_round_the_next_node_is_tried_at_once() -> None:
    assert not sv.next_attempt_now(1, 1)  # one node: always the back-off
    assert sv.next_attempt_now(1, 3) and sv.next_attempt_now(2, 3)
    assert not sv.next_attempt_now(3, 3)  # a whole round failed: back off
    assert sv.next_attempt_now(4, 3)


def test_the_verdict_of_the_failures() -> None:
    nodes = ["tcp://h:1", "tcp://h:2"]
    assert sv.verdict(nodes, {}) is None
    assert sv.verdict(nodes, {"tcp://h:1": sv.REFUSED}) is None  # h:2 may answer
    assert sv.verdict(nodes, {"tcp://h:1": sv.REFUSED, "tcp://h:2": sv.REFUSED}) == sv.REFUSED
    assert sv.verdict(nodes, {"tcp://h:1": sv.REFUSED, "tcp://h:2": sv.TIMEOUT}) == sv.TIMEOUT
    mixed = {"tcp://h:1": sv.TIMEOUT, "tcp://h:2": sv.KEY_MISMATCH}
    assert sv.verdict(nodes, mixed) == sv.KEY_MISMATCH
    assert sv.verdict(nodes, {"tcp://h:1": sv.AUTH, "tcp://h:2": sv.LOST}) == sv.AUTH
    assert sv.verdict([], {}) is None
    draining = {"tcp://h:1": sv.DRAINING, "tcp://h:2": sv.REFUSED}
    assert sv.verdict(nodes, draining) == sv.DRAINING
    assert sv.verdict(nodes, {**draining, "tcp://h:2": sv.TIMEOUT}) == sv.TIMEOUT


def test_the_remembered_node_is_kept_per_connect_string(tmp_path: Path) -> None:
    a, b = _addresses(2)
    cache = Cache(tmp_path / "cache.db", b"k" * 32)
    try:
        assert remembered_node(cache, [a, b]) is None
        assert last_sync_ms(cache) is None
        cache.set_meta(LAST_NODE, f'{{"given": "{format_connect([a, b])}", "node": "{b}"}}')
        assert remembered_node(cache, [a, b]) == b
        assert remembered_node(cache, [b, a]) is None  # another connect string
        assert remembered_node(cache, [a]) is None
        cache.set_meta(LAST_NODE, "not json")
        assert remembered_node(cache, [a, b]) is None
        assert remembered_live(cache, [a, b]) == []
        live = f'"live": ["{b}", "{a}", 7]'
        cache.set_meta(LAST_NODE, f'{{"given": "{format_connect([a, b])}", "node": "{b}", {live}}}')
        assert remembered_live(cache, [a, b]) == [
            str(b),
            str(a),
        ]  # what is not a string is left out
        assert remembered_live(cache, [b]) == []  # another connect string
        cache.set_meta(LAST_NODE, '{"given": "x", "live": "not a list"}')
        assert remembered_live(cache, [a, b]) == []
    finally:
        cache.close()
