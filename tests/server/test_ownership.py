"""Room ownership's rules (server/ownership.py), driven without sockets."""

from __future__ import annotations

from collections import Counter

import pytest

from curvechat.server.ownership import DOWN_S, Ownership, Route, owner_of

ROOMS = [f"room-{i}" for i in range(6000)]


def test_every_node_computes_the_same_owner_whatever_the_order() -> None:
    for room in ROOMS[:200]:
        assert owner_of(room, ["a", "b", "c"]) == owner_of(room, ["c", "a", "b"])
    assert owner_of("x", []) is None


def test_rooms_spread_evenly_over_three_nodes() -> None:
    counts = Counter(owner_of(r, ["n1", "n2", "n3"]) for r in ROOMS)
    for name in ("n1", "n2", "n3"):
        assert abs(counts[name] - len(ROOMS) / 3) < 0.05 * len(ROOMS) / 3, counts


def test_only_the_rooms_of_a_node_that_leaves_move() -> None:
    before = {r: owner_of(r, ["n1", "n2", "n3"]) for r in ROOMS}
    after = {r: owner_of(r, ["n1", "n3"]) for r in ROOMS}
    moved = [r for r in ROOMS if before[r] != after[r]]
    assert moved and all(before[r] == "n2" for r in moved)
    assert len(moved) == sum(1 for r in ROOMS if before[r] == "n2")
    # and a node that comes back takes back exactly those
    assert {r: owner_of(r, ["n1", "n2", "n3"]) for r in ROOMS} == before


def _room_of(owner: str, nodes: list[str]) -> str:
    return next(r for r in ROOMS if owner_of(r, nodes) == owner)


@pytest.mark.parametrize(
    ("live", "forwarded", "link", "owner", "expected"),
    [
        # the table in the module docstring, row by row
        (["a", "b"], True, "", "b", (Route.LOCAL, None)),  # came over the link
        ([], False, "", None, (Route.LOCAL, None)),  # no live node named
        (["b", "c"], False, "", "b", (Route.LOCAL, None)),  # this node not live (draining)
        (["a", "b"], False, "", "a", (Route.LOCAL, None)),  # owned here
        (["a", "b"], False, "unreachable", "b", (Route.INSTEAD, "b")),  # heartbeat unanswered
        (["a", "b"], False, "failed", "b", (Route.INSTEAD, "b")),  # owner's link failed lately
        (["a", "b"], False, "", "b", (Route.FORWARD, "b")),  # otherwise: forward
        (["a", "b"], False, "slow", "b", (Route.INSTEAD, "b")),  # slow owner, a stands in
        (["a", "b"], False, "me slow", "a", (Route.FORWARD, "b")),  # slow here: b stands in
        (["a", "b"], False, "me slow", "b", (Route.FORWARD, "b")),  # b owns it anyway
        (["a", "b"], False, "all slow", "b", (Route.FORWARD, "b")),  # nobody better placed
        (["a", "b"], False, "all slow", "a", (Route.LOCAL, None)),
    ],
)
def test_route_table(
    live: list[str],
    forwarded: bool,
    link: str,
    owner: str | None,
    expected: tuple[Route, str | None],
) -> None:
    own = Ownership("a")
    own.set_live(live)
    room = _room_of(owner, live) if owner is not None else "any"
    if link == "failed":
        own.link_failed("b", now=100.0)
    elif link == "unreachable":
        own.set_reachable("b", False)
    for name in {"slow": "b", "me slow": "a", "all slow": "ab"}.get(link, ""):
        assert own.set_slow(name, True) is True
    assert own.route(room, 100.0 + DOWN_S / 2, forwarded=forwarded) == expected


def test_an_unreachable_owner_is_used_again_as_soon_as_it_answers() -> None:
    own = Ownership("a")
    own.set_live(["a", "b"])
    room = _room_of("b", ["a", "b"])
    assert own.set_reachable("b", False) is True
    assert own.set_reachable("b", False) is False  # no change
    assert own.route(room, 10.0) == (Route.INSTEAD, "b")
    assert own.set_reachable("b", True) is True
    assert own.route(room, 10.0) == (Route.FORWARD, "b")  # no DOWN_S wait
    own.set_reachable("b", False)
    own.set_live(["a"])  # b left: what its heartbeat said is forgotten
    own.set_live(["a", "b"])
    assert own.route(room, 10.0) == (Route.FORWARD, "b")


def test_a_failed_link_is_tried_again_after_down_s() -> None:
    own = Ownership("a")
    own.set_live(["a", "b"])
    room = _room_of("b", ["a", "b"])
    own.link_failed("b", now=10.0)
    assert own.route(room, 10.0 + DOWN_S - 0.01) == (Route.INSTEAD, "b")
    assert own.route(room, 10.0 + DOWN_S) == (Route.FORWARD, "b")
    own.link_failed("b", now=20.0)
    own.link_worked("b")
    assert own.route(room, 20.1) == (Route.FORWARD, "b")


def test_owners_follow_the_registry() -> None:
    own = Ownership("a")
    assert own.set_live(["a", "b"]) is True
    assert own.set_live(["b", "a"]) is False  # same set: nothing to redo
    room = _room_of("b", ["a", "b"])
    assert own.route(room, 0.0) == (Route.FORWARD, "b")
    own.link_failed("b", now=0.0)
    own.set_live(["a"])  # b left: its rooms are ours, its failure forgotten
    assert own.route(room, 0.0) == (Route.LOCAL, None)
    assert own.down_until == {}
    assert [own.owner(r) for r in (room, "other")] == ["a", "a"]


NODES = ["a", "b", "c"]


def _views(**state: str) -> dict[str, Ownership]:
    """Each of the three nodes' Ownership, with the same view of the others."""
    views = {}
    for me in NODES:
        own = Ownership(me)
        own.set_live(NODES)
        for name, how in state.items():
            if how == "slow":
                own.set_slow(name, True)
            elif how == "unreachable" and name != me:
                own.set_reachable(name, False)
        views[me] = own
    return views


def _committer(own: Ownership, room: str) -> str:
    """The node where a send into `room` taken by `own.me` is committed."""
    how, name = own.route(room, 0.0)
    return name if how is Route.FORWARD and name is not None else own.me


@pytest.mark.parametrize("how", ["unreachable", "slow"])
def test_an_owner_that_cannot_take_its_rooms_has_one_stand_in_for_every_node(how: str) -> None:
    # Whichever node a send is taken by, b's rooms are committed by one node
    # (so their head compare-and-swaps do not race), and the rooms of a and
    # c stay where they were.
    views = _views(b=how)
    moved = 0
    for room in ROOMS[:300]:
        owner = owner_of(room, NODES)
        takers = {me: _committer(views[me], room) for me in NODES if me != "b" or how == "slow"}
        committers = set(takers.values())
        assert len(committers) == 1, (room, takers)
        (committer,) = committers
        if owner == "b":
            moved += 1
            assert committer == owner_of(room, ["a", "c"])
        else:
            assert committer == owner
    assert moved > 50  # about a third of the rooms


def test_a_slow_owner_stands_in_only_when_every_node_is_slow() -> None:
    views = _views(b="slow", c="slow")
    for room in ROOMS[:100]:
        assert {_committer(v, room) for v in views.values()} == {"a"}
    views = _views(a="slow", b="slow", c="slow")
    for room in ROOMS[:100]:
        assert {_committer(v, room) for v in views.values()} == {owner_of(room, NODES)}


def test_an_unreachable_owners_stand_in_is_a_quick_node_if_there_is_one() -> None:
    own = Ownership("a")
    own.set_live(NODES)
    own.set_slow("c", True)
    own.set_reachable("b", False)
    room = _room_of("b", NODES)
    # b cannot be reached; c is slow but usable: a healthy node (a) is preferred.
    assert own.route(room, 0.0) == (Route.INSTEAD, "b")
    own.set_slow("a", True)  # every usable node is slow: the rendezvous among them
    assert _committer(own, room) == owner_of(room, ["a", "c"])


def test_slowness_is_forgotten_with_the_node_but_kept_for_this_one() -> None:
    own = Ownership("a")
    own.set_live(NODES)
    assert own.set_slow("a", True) is True
    assert own.set_slow("a", True) is False  # no change
    own.set_slow("c", True)
    own.set_live(["a", "b"])
    assert own.slow == {"a"}
    assert own.set_slow("a", False) is True


def test_a_node_cut_off_from_etcd_is_not_its_own_stand_in() -> None:
    own = Ownership("a")
    own.set_live(NODES)
    own.set_slow("a", True)  # what a cut-off node says of itself
    own.cut_off_here = True
    own.set_slow("b", True)
    own.set_slow("c", True)  # every node slow: the rendezvous among all usable
    for room in ROOMS[:200]:
        assert _committer(own, room) == owner_of(room, ["b", "c"])
    own.set_reachable("b", False)
    own.set_reachable("c", False)  # nobody else usable: here, and it fails
    assert {_committer(own, room) for room in ROOMS[:50]} == {"a"}
