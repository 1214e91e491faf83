"""`curvechat contacts`: show the list, add and remove users, take rooms only
from them; the refusal a non-contact then gets, as one line with its code.
`curvechat leave --added-by USER`: the rooms a spammer put you in before,
listed, then left."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from curvechat.cli.main import main
from curvechat.client.engine import ChatClient
from curvechat.client.errors import NotConnected, RequestTimeout, UntrustedLog


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


def test_leave_every_room_a_spammer_added_you_to(cli: Callable[[str], Any]) -> None:
    """Rooms made before the list was turned on stay; `leave --added-by`
    lists them, and with --yes leaves them all, and no other room."""
    alice, bob, mallory = cli("alice"), cli("bob"), cli("mallory")
    for user, name in ((alice, "alice"), (bob, "bob"), (mallory, "mallory")):
        user.run("init", "--user", name)
    for room in ("spam1", "spam2", "spam3"):
        mallory.run("create", room, "--members", "bob")
    alice.run("create", "friends", "--members", "bob,mallory")
    bob.run("create", "own", "--members", "mallory")
    rows = [json.loads(line) for line in bob.run("rooms", "--json").stdout.splitlines()]
    assert {r["room"]: r["added_by"] for r in rows} == {
        "spam1": "mallory",
        "spam2": "mallory",
        "spam3": "mallory",
        "friends": "alice",
        "own": "bob",
    }

    listed = bob.run("leave", "--added-by", "mallory")
    assert listed.stdout.splitlines() == [f"would leave spam{i}" for i in (1, 2, 3)]
    assert "curvechat leave --added-by mallory --yes" in listed.stderr
    assert len(bob.run("rooms", "--json").stdout.splitlines()) == 5  # nothing left yet

    left = bob.run("leave", "--added-by", "mallory", "--yes")
    assert left.stdout.splitlines() == [f"left spam{i}" for i in (1, 2, 3)]
    rows = [json.loads(line) for line in bob.run("rooms", "--json").stdout.splitlines()]
    assert sorted(r["room"] for r in rows if r["added_by"]) == ["friends", "own"]
    assert bob.run("leave", "--added-by", "mallory").stdout == ""

    got = bob.run("leave", "friends", "own")
    assert got.stdout.splitlines() == ["left friends", "left own"]


def test_leave_usage_errors(cli: Callable[[str], Any]) -> None:
    bob = cli("bob")
    bob.run("init", "--user", "bob")
    for argv, words in (
        (("leave",), "leave takes ROOM ... or --added-by USER"),
        (("leave", "r", "--added-by", "mallory"), "leave takes ROOM ... or --added-by USER"),
        (("leave", "r", "--yes"), "--yes goes with --added-by"),
        (("leave", "--added-by", "bob"), "those are the rooms you created"),
    ):
        got = bob.run(*argv, ok=False)
        assert got.returncode == 2, (argv, got.stderr)
        assert words in got.stderr, (argv, got.stderr)
    got = bob.run("leave", "--added-by", "Not A Name", ok=False)
    assert got.returncode == 1 and "[bad_name]" in got.stderr, got.stderr
    got = bob.run("leave", "nosuchroom", ok=False)
    assert got.returncode == 1 and "[no_such_room]" in got.stderr, got.stderr


@pytest.mark.parametrize("error", ["timeout", "untrusted_log", "not_connected"])
def test_leaving_many_rooms_goes_on_past_one_that_fails(
    cli: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: str,
) -> None:
    """A room whose leave times out, or whose log does not verify (a hostile
    node), is one error line naming it, and the rooms after it are still
    left; a lost connection stops there and says how many were not."""
    bob, mallory = cli("bob"), cli("mallory")
    bob.run("init", "--user", "bob")
    mallory.run("init", "--user", "mallory")
    for room in ("spam1", "spam2", "spam3"):
        mallory.run("create", room, "--members", "bob")
    failure = {
        "timeout": RequestTimeout("no reply in time"),
        "untrusted_log": UntrustedLog("the log does not verify"),
        "not_connected": NotConnected("connection lost"),
    }[error]
    real = ChatClient.leave

    async def leave(self: ChatClient, room: str) -> None:
        if room == "spam2":
            raise failure
        await real(self, room)

    monkeypatch.setattr(ChatClient, "leave", leave)
    for name, value in bob.env.items():
        monkeypatch.setenv(name, value)
    argv = ["leave", "--added-by", "mallory", "--yes", "--server", bob.server.connect]
    try:
        code = main(argv)
    except SystemExit as exit_:  # a failure that ends the command
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"[{error}]: spam2: " in lines[0], err
    if error == "not_connected":
        assert out.splitlines() == ["left spam1"]
        assert "2 room(s) not left" in lines[0]
    else:
        assert out.splitlines() == ["left spam1", "left spam3"]
