"""`tail` says what changes: nothing while the connection is idle (the
engine reports each ping's round trip), a line when it is lost and when it
is back; and when you leave the room or are removed from it, it says so
and ends (issue 16, item 5)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _pair(cli: Callable[[str], Any], room: str) -> tuple[Any, Any]:
    alice, bob = cli("alice"), cli("bob")
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", room, "--members", "bob")
    return alice, bob


def test_idle_tail_is_quiet_and_connection_changes_are_told_once(
    cli: Callable[[str], Any], tails: Callable[..., Any]
) -> None:
    alice, bob = _pair(cli, "quiet")
    tail = tails(bob, "quiet")
    tail.err.until("following quiet")
    time.sleep(4)  # heartbeats and pings go on, and nothing is said
    assert tail.err.drain() == []
    alice.run("send", "quiet", "still there?")
    assert "still there?" in tail.out.until("still there?")

    bob.server.restart()
    tail.err.until("connection lost")
    tail.err.until("connected to")
    time.sleep(3)
    lines = tail.err.seen + tail.err.drain()
    assert sum("connection lost" in ln for ln in lines) == 1, lines
    assert sum("connected to" in ln for ln in lines) == 1, lines
    assert tail.proc.poll() is None
    assert tail.stop() == 0


def test_tail_says_you_were_removed_and_ends(
    cli: Callable[[str], Any], tails: Callable[..., Any]
) -> None:
    alice, bob = _pair(cli, "live")
    tail = tails(bob, "live", "--json")
    tail.err.until("following live")
    alice.run("remove", "live", "bob")
    line = tail.err.until("removed")
    assert "[removed]" in line and "you were removed from live" in line
    assert tail.proc.wait(20) == 1


def test_tail_says_you_left_and_ends(cli: Callable[[str], Any], tails: Callable[..., Any]) -> None:
    _alice, bob = _pair(cli, "live")
    tail = tails(bob, "live")
    tail.err.until("following live")
    bob.run("leave", "live")  # from another process of the same home
    assert "you left live" in tail.err.until("you left")
    assert tail.proc.wait(20) == 0
    # a room you left is not followed
    again = bob.run("tail", "live", ok=False)
    assert again.returncode == 1 and "[not_member]" in again.stderr
