"""`@user` names the direct-message room with that user in every command
that takes a room: the ones where it makes sense act on that room (`send`,
`leave`, `promote`), the membership rules refuse the rest with one line and
a code (a third member, removing the other), and `@` followed by your own
name is no room at all (`bad_room`), online or offline; never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def one_error(got: Any, code: str) -> str:
    assert got.returncode == 1, got.stderr
    assert "Traceback" not in got.stderr and got.stderr.count("\n") == 1, got.stderr
    assert got.stderr.startswith(f"curvechat: error [{code}]: "), got.stderr
    return str(got.stderr)


@pytest.fixture
def dm(cli: Callable[[str], Any]) -> tuple[Any, Any, Any]:
    """alice and bob with their direct-message room; carol registered."""
    alice, bob, carol = cli("alice"), cli("bob"), cli("carol")
    for user in (alice, bob, carol):
        user.run("init", "--user", user.name)
    alice.run("dm", "bob", "hello")
    return alice, bob, carol


def test_membership_commands_take_at_user(dm: tuple[Any, Any, Any]) -> None:
    alice, bob, _carol = dm
    assert alice.run("send", "@bob", "again").stdout == "sent to @alice:bob\n"
    third = alice.run("invite", "@bob", "carol", ok=False)
    assert "direct-message room" in one_error(third, "forbidden")
    removed = alice.run("remove", "@bob", "bob", ok=False)
    assert "@alice:bob is a direct-message room" in one_error(removed, "forbidden")
    assert alice.run("promote", "@bob", "bob").stdout == "bob is now an admin of @alice:bob\n"
    assert bob.run("leave", "@alice").stdout == "left @alice:bob\n"
    assert "[not_member]" in bob.run("send", "@alice", "hi", ok=False).stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("history", "@alice"),
        ("tail", "@alice"),
        ("members", "@alice"),
        ("history-sharing", "@alice"),
        ("history-sharing", "@alice", "all"),
        ("send", "@alice", "to me"),
        ("leave", "@alice"),
        ("invite", "@alice", "bob"),
    ],
)
def test_at_your_own_name_is_no_room(dm: tuple[Any, Any, Any], argv: tuple[str, ...]) -> None:
    alice = dm[0]
    err = one_error(alice.run(*argv, ok=False), "bad_room")
    assert "@alice is you" in err


def test_at_your_own_name_is_no_room_offline(dm: tuple[Any, Any, Any]) -> None:
    alice = dm[0]
    alice.server.stop()
    for argv in (("history", "@alice"), ("send", "@alice", "to me")):
        assert "@alice is you" in one_error(alice.run(*argv, ok=False), "bad_room")
    queued = alice.run("send", "@bob", "while down", ok=False)
    assert queued.returncode == 75 and "queued for @alice:bob" in queued.stderr


def test_a_text_that_cannot_be_sent_makes_no_direct_message_room(
    dm: tuple[Any, Any, Any],
) -> None:
    """`dm` checks its text before the room is made for it: carol sees no
    room from alice for a message that was never going to be sent."""
    alice, _bob, carol = dm
    err = one_error(alice.run("dm", "carol", "x" * 16_001, ok=False), "too_large")
    assert "16,001 characters" in err
    assert "@alice:carol" not in carol.run("rooms").stdout
    assert "@alice:carol" not in alice.run("rooms").stdout
