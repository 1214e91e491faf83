"""`curvechat contacts`: show the list, add and remove users, take rooms only
from them; the refusal a non-contact then gets, as one line with its code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_contacts_from_the_command_line(cli: Callable[[str], Any]) -> None:
    alice, bob, carol = cli("alice"), cli("bob"), cli("carol")
    for user, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        user.run("init", "--user", name)
    assert bob.run("contacts").stdout == "anyone may put you in a room\ncontacts (0)\n"
    got = bob.run("contacts", "add", "alice")
    assert got.stdout == "anyone may put you in a room\ncontacts (1):\n  alice\n"
    got = bob.run("contacts", "only")
    assert got.stdout.splitlines()[0] == "only your contacts may put you in a room"

    refused = carol.run("create", "r", "--members", "bob", ok=False)
    assert refused.returncode == 1 and refused.stdout == ""
    line = refused.stderr.strip()
    assert line.startswith("curvechat: error [contacts_only]: bob takes rooms only"), line
    refused = carol.run("dm", "bob", "hello", ok=False)
    assert "[contacts_only]" in refused.stderr, refused.stderr
    alice.run("create", "r", "--members", "bob")
    assert bob.run("members", "r").stdout.splitlines()[1] == "bob"

    got = bob.run("contacts", "remove", "alice")
    assert got.stdout == "only your contacts may put you in a room\ncontacts (0)\n"
    bob.run("contacts", "anyone")
    carol.run("create", "r2", "--members", "bob")


def test_contacts_usage_errors(cli: Callable[[str], Any]) -> None:
    bob = cli("bob")
    bob.run("init", "--user", "bob")
    for argv, words in (
        (("contacts", "add"), "contacts add needs at least one USER"),
        (("contacts", "only", "alice"), "contacts only takes no USER"),
        (("contacts", "frob"), "invalid choice: 'frob'"),
    ):
        got = bob.run(*argv, ok=False)
        assert got.returncode == 2, (argv, got.stderr)
        assert words in got.stderr, (argv, got.stderr)
    got = bob.run("contacts", "add", "Not A Name", ok=False)
    assert got.returncode == 1 and "[bad_name]" in got.stderr, got.stderr
    got = bob.run("contacts", "add", "nobody", ok=False)
    assert got.returncode == 1 and "[no_such_user]" in got.stderr, got.stderr
