"""A room this home has never been in (a misspelled name, most often) is
one error, with one code and one message, whatever the command that was
given it: `history` said it in the server's words, `invite`, `remove`,
`promote` and `leave` called it `not_member`, `history-sharing` had words
of its own. Offline too, for the commands that work offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EXPECTED = (
    "curvechat: error [no_such_room]: no room genral here: you are not a member of it;"
    " `curvechat rooms` lists yours"
)

EVERY_COMMAND = [
    ("history", "genral"),
    ("send", "genral", "hello"),
    ("tail", "genral"),
    ("members", "genral"),
    ("invite", "genral", "carol"),
    ("remove", "genral", "bob"),
    ("promote", "genral", "bob"),
    ("leave", "genral"),
    ("history-sharing", "genral"),
    ("history-sharing", "genral", "all"),
]


def _said(user: Any, *argv: str) -> tuple[int, str, str]:
    got = user.run(*argv, ok=False)
    return got.returncode, got.stdout, got.stderr.strip()


def test_a_misspelled_room_is_one_error_in_every_command(cli: Callable[[str], Any]) -> None:
    alice, bob, carol = cli("alice"), cli("bob"), cli("carol")
    for user in (alice, bob, carol):
        user.run("init", "--user", user.name)
    alice.run("create", "general", "--members", "bob")

    said = {argv: _said(alice, *argv) for argv in map(tuple, EVERY_COMMAND)}
    assert said == dict.fromkeys(said, (1, "", EXPECTED))

    # The room is still as it was: nothing was sent, nobody added or removed.
    assert alice.run("members", "general").stdout.splitlines() == [
        "alice (admin)",
        "bob (unverified)",
    ]
    assert alice.run("history", "general").stdout == ""

    # Offline, `send` and `history` (which answer without a server) say the same.
    alice.server.stop()
    for argv in (("history", "genral"), ("send", "genral", "hello")):
        assert _said(alice, *argv) == (1, "", EXPECTED), argv


def test_a_direct_message_room_never_opened_is_the_same_error(
    cli: Callable[[str], Any],
) -> None:
    alice, bob = cli("alice"), cli("bob")
    for user in (alice, bob):
        user.run("init", "--user", user.name)
    got = {argv: _said(alice, *argv) for argv in (("history", "@bob"), ("members", "@bob"))}
    expected = EXPECTED.replace("genral", "@alice:bob")
    assert got == dict.fromkeys(got, (1, "", expected))
