"""`history` of a room you are no longer a member of: it shows what this
home kept, and says on stderr that you left or are no longer a member,
instead of passing the room off as one you are in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _room(cli: Callable[[str], Any]) -> tuple[Any, Any]:
    alice, bob = cli("alice"), cli("bob")
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", "r", "--members", "bob")
    alice.run("send", "r", "while you were here")
    got = bob.run("history", "r")
    assert "while you were here" in got.stdout and got.stderr == ""  # a member: no note
    return alice, bob


def test_history_after_a_removal_says_you_are_no_longer_a_member(
    cli: Callable[[str], Any],
) -> None:
    alice, bob = _room(cli)
    alice.run("remove", "r", "bob")
    alice.run("send", "r", "after you left")
    got = bob.run("history", "r")
    assert "while you were here" in got.stdout and "after you left" not in got.stdout
    # The node stops serving the room's log to bob: the removal op itself
    # never reaches his cache, so who removed him is not known here.
    assert got.stderr.strip() == (
        "-- you are no longer a member of r: these are the messages this home kept"
    )


def test_history_after_leaving_says_so_in_json_too(cli: Callable[[str], Any]) -> None:
    _alice, bob = _room(cli)
    bob.run("leave", "r")
    got = bob.run("history", "r", "--json")
    assert [json.loads(line)["text"] for line in got.stdout.splitlines()] == ["while you were here"]
    assert got.stderr.strip() == "-- you left r: these are the messages this home kept"
