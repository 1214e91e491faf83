"""`members` of a room this home never joined, or no longer is a member
of, is an error with a code, as `tail` is; it listed nothing (exit 0), or
the members as they were when this home last saw the room."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_members_of_a_room_never_joined_is_no_such_room(cli: Callable[[str], Any]) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    got = alice.run("members", "nosuchroom", ok=False)
    assert got.returncode == 1 and got.stdout == ""
    assert "[no_such_room]: no room nosuchroom here" in got.stderr


def test_members_after_a_removal_is_not_member(cli: Callable[[str], Any]) -> None:
    alice, carol = cli("alice"), cli("carol")
    alice.run("init", "--user", "alice")
    carol.run("init", "--user", "carol")
    alice.run("create", "r", "--members", "carol")
    assert carol.run("members", "r").stdout.split()[0] == "alice"
    alice.run("remove", "r", "carol")
    got = carol.run("members", "r", ok=False)
    assert got.returncode == 1 and got.stdout == ""
    assert "[not_member]: you are no longer a member of r" in got.stderr


def test_a_refused_membership_change_says_its_code_once(cli: Callable[[str], Any]) -> None:
    """A member who is not an admin removing another: one line, the code in
    brackets and not again at the start of the message."""
    alice, bob = cli("alice"), cli("bob")
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", "r", "--members", "bob")
    got = bob.run("remove", "r", "alice", ok=False)
    assert got.returncode == 1, got.stderr
    line = got.stderr.strip()
    assert line.startswith("curvechat: error [forbidden]: remove of 'alice' by 'bob'"), line
    assert "requires that the actor is an admin" in line


def test_sending_to_a_room_never_joined_is_no_such_room_as_elsewhere(
    cli: Callable[[str], Any],
) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    got = alice.run("send", "nosuchroom", "hello", ok=False)
    assert got.returncode == 1 and got.stdout == ""
    assert "[no_such_room]: no room nosuchroom here" in got.stderr
