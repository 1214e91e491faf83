"""The user story of core messaging, through the real `curvechat` command
against a real server process: alice, bob and carol in a room, bob leaving
and coming back, carol joining late, direct messages, tail, errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from curvechat.crypto.identity import Identity, fingerprint

from support.servers import ServerProcess


class User:
    def __init__(self, name: str, root: Path, server: ServerProcess) -> None:
        self.name = name
        self.home = root / name
        self.server = server
        self.env = {
            **os.environ,
            "CURVECHAT_HOME": str(self.home),
            "CURVECHAT_PASSPHRASE": f"correct horse {name}",
        }

    def run(
        self, *args: str, ok: bool = True, stdin: str | None = None, server: bool = True
    ) -> subprocess.CompletedProcess[str]:
        extra = ["--server", self.server.connect] if server else []
        cmd = [sys.executable, "-m", "curvechat", args[0], *extra, *args[1:]]
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, input=stdin, timeout=60
        )
        if ok:
            assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
        return proc

    def history(self, room: str) -> list[dict[str, object]]:
        out = self.run("history", room, "--json").stdout
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def people(tmp_path: Path, server: ServerProcess) -> dict[str, User]:
    return {n: User(n, tmp_path, server) for n in ("alice", "bob", "carol")}


def texts(rows: list[dict[str, object]]) -> list[object]:
    return [r["text"] for r in rows]


def test_alice_bob_carol(people: dict[str, User]) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    for user in (alice, bob, carol):
        out = user.run("init", "--user", user.name).stdout
        assert f"registered as {user.name}" in out
        assert (user.home / "identity.key").stat().st_mode & 0o777 == 0o600

    alice.run("create", "general", "--members", "bob")
    alice.run("send", "general", "hi bob")
    bob.run("send", "general", "hi alice")
    rows = bob.history("general")
    assert texts(rows) == ["hi bob", "hi alice"]
    assert [r["seq"] for r in rows] == [1, 2]
    assert [r["sender"] for r in rows] == ["alice", "bob"]
    assert all(str(r["ts"]).endswith("Z") and "T" in str(r["ts"]) for r in rows)

    bob.run("leave", "general")
    alice.run("send", "general", "bob has left")
    refused = bob.run("send", "general", "still here?", ok=False)
    assert refused.returncode == 1 and "[not_member]" in refused.stderr

    alice.run("invite", "general", "bob")  # bob comes back
    bob.run("send", "general", "back again")
    assert texts(bob.history("general")) == ["hi bob", "hi alice", "bob has left", "back again"]

    alice.run("send", "general", "-", stdin="line one\nline two\n")
    alice.run("invite", "general", "carol")
    assert texts(carol.history("general")) == [
        "hi bob",
        "hi alice",
        "bob has left",
        "back again",
        "line one",
        "line two",
    ]

    # direct messages
    alice.run("dm", "bob", "just between us")
    bob.run("dm", "alice", "indeed")
    assert texts(bob.history("@alice")) == ["just between us", "indeed"]
    assert texts(alice.history("@bob")) == ["just between us", "indeed"]
    nosy = carol.run("history", "@alice:bob", ok=False)
    assert nosy.returncode == 1
    rooms = [json.loads(line) for line in carol.run("rooms", "--json").stdout.splitlines()]
    assert [r["room"] for r in rooms] == ["general"]
    assert rooms[0]["members"] == ["alice", "bob", "carol"]

    # the server was remembered after first use
    assert (alice.home / "server").read_text().strip() == alice.server.connect
    assert (
        texts(
            [
                json.loads(x)
                for x in alice.run("history", "general", "--json", server=False).stdout.splitlines()
            ]
        )[-1]
        == "line two"
    )
    # --members given twice adds both; each member once
    made = alice.run("create", "trio", "--members", "bob", "--members", "carol,bob,alice")
    assert "created trio with alice, bob, carol" in made.stdout
    rooms = [json.loads(line) for line in carol.run("rooms", "--json").stdout.splitlines()]
    assert [r["members"] for r in rooms if r["room"] == "trio"] == [["alice", "bob", "carol"]]


def test_tail_follows_until_interrupted(people: dict[str, User]) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", "live", "--members", "bob")
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "curvechat",
            "tail",
            "live",
            "--json",
            "--server",
            bob.server.connect,
        ],
        env=bob.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None and tail.stdout is not None
        for line in tail.stderr:
            if "following live" in line:
                break
        alice.run("send", "live", "are you there?")
        got = json.loads(tail.stdout.readline())
        assert (got["room"], got["sender"], got["text"], got["seq"]) == (
            "live",
            "alice",
            "are you there?",
            1,
        )
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(20) == 0
        for stream in (tail.stdout, tail.stderr):
            if stream is not None:
                stream.close()


def test_errors_are_one_line_with_a_code(people: dict[str, User], tmp_path: Path) -> None:
    alice = people["alice"]
    no_id = alice.run("rooms", ok=False)
    assert no_id.returncode == 1 and "[no_identity]" in no_id.stderr
    assert "run `curvechat init --user NAME`" in no_id.stderr  # the home from the environment
    elsewhere = tmp_path / "elsewhere home"
    named = alice.run("rooms", "--home", str(elsewhere), ok=False)
    assert f"run `curvechat init --user NAME --home '{elsewhere}'`" in named.stderr, named.stderr
    alice.run("init", "--user", "alice")
    again = alice.run("init", "--user", "alice", ok=False)
    assert "[identity_exists]" in again.stderr
    bad_name = people["bob"].run("init", "--user", "Bob!", ok=False)
    assert bad_name.returncode == 2 and "[bad_name]" in bad_name.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "curvechat", "rooms"],
        capture_output=True,
        text=True,
        env={**alice.env, "CURVECHAT_PASSPHRASE": "wrong"},
        timeout=60,
    )
    assert wrong.returncode == 1 and "[wrong_passphrase]" in wrong.stderr
    bad_server = alice.run("rooms", "--server", "tcp://nowhere", ok=False, server=False)
    assert bad_server.returncode == 2 and "[bad_connect_string]" in bad_server.stderr
    alice.run("create", "general")  # a room of hers: inviting nobody is about the user
    missing = alice.run("invite", "general", "nobody", ok=False)
    assert missing.returncode == 1 and "[no_such_user]" in missing.stderr
    bad_room = alice.run("create", "Bad Room", ok=False)
    assert bad_room.returncode == 1 and "[bad_room]" in bad_room.stderr
    dm_self = alice.run("dm", "alice", "hi me", ok=False)
    assert dm_self.returncode == 1 and "[bad_name]" in dm_self.stderr
    dm_bad = alice.run("dm", "Not A Name", "hi", ok=False)
    assert dm_bad.returncode == 1 and "[bad_name]" in dm_bad.stderr
    for proc in (no_id, again, bad_name, wrong, bad_server, missing, bad_room, dm_self, dm_bad):
        assert "Traceback" not in proc.stderr


def test_unreachable_server_is_reported(people: dict[str, User]) -> None:
    alice = people["alice"]
    alice.run("init", "--user", "alice")
    dead = alice.server.connect.replace(f":{alice.server.port}/", ":1/")
    proc = alice.run("members", "general", "--server", dead, ok=False, server=False)
    assert proc.returncode == 3 and "[unreachable]" in proc.stderr
    # rooms and history answer from the local cache instead (tests/cli/test_offline.py)
    cached = alice.run("rooms", "--server", dead, server=False)
    assert "offline" in cached.stderr and "last synced" in cached.stderr


def test_keys_show_matching_safety_numbers(people: dict[str, User]) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", "pair", "--members", "bob")
    bob.run("rooms")  # bob sees the room and pins alice
    mine = alice.run("keys", "bob").stdout
    theirs = bob.run("keys", "alice").stdout

    def number(out: str) -> str:
        (line,) = [ln for ln in out.splitlines() if "safety number" in ln]
        return line.split(":", 1)[1].strip()

    assert number(mine) == number(theirs)
    assert len(number(mine).split()) == 12
    assert "CHANGED" not in mine
    none = alice.run("keys", "--accept", "bob", ok=False)
    assert none.returncode == 1 and "[no_key_change]" in none.stderr


def test_a_changed_key_is_accepted_by_its_fingerprint(people: dict[str, User]) -> None:
    """`keys --accept USER FINGERPRINT` accepts the offered key only if
    FINGERPRINT (all of it, or its first 16 hex digits or more) is its
    fingerprint; without FINGERPRINT it shows the key and exits 2."""
    alice, bob = people["alice"], people["bob"]
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("keys", "bob")  # pinned
    real = pinned(alice.home, "bob")
    # As if the directory had answered another key before: the real one is now offered.
    other = Identity.generate("bob").sign_pub
    set_pin(alice.home, "bob", other)
    offered = fingerprint(real)

    listing = alice.run("keys", "bob", ok=False)
    assert listing.returncode == 1
    assert f"the key of bob CHANGED to {offered}" in listing.stdout
    assert f"then: curvechat keys --accept bob {offered}" in listing.stdout

    blind = alice.run("keys", "--accept", "bob", ok=False)
    assert blind.returncode == 2, blind.stderr
    assert f"bob offers a new key: {offered}" in blind.stdout
    assert "new safety number: " in blind.stdout
    assert "[no_fingerprint]" in blind.stderr
    assert f"curvechat keys --accept bob {offered}" in blind.stderr
    assert pinned(alice.home, "bob") == other

    wrong = fingerprint(Identity.generate("bob").sign_pub)
    refused = alice.run("keys", "--accept", "bob", wrong, ok=False)
    assert refused.returncode == 1 and "[fingerprint_mismatch]" in refused.stderr
    assert f"bob offers a new key: {offered}" in refused.stdout
    assert pinned(alice.home, "bob") == other

    for bad in ("1234", "zz" * 8, offered + " 0000"):
        usage = alice.run("keys", "--accept", "bob", bad, ok=False)
        assert usage.returncode == 2 and "[bad_argument]" in usage.stderr, bad
    assert pinned(alice.home, "bob") == other

    start = offered.split()[:4]  # 16 hex digits, typed as the groups shown
    done = alice.run("keys", "--accept", "bob", *start)
    assert f"accepted the new key of bob: {offered}" in done.stdout
    assert pinned(alice.home, "bob") == real
    assert "CHANGED" not in alice.run("keys", "bob").stdout


def pinned(home: Path, user: str) -> bytes:
    db = sqlite3.connect(home / "cache.db")
    try:
        (key,) = db.execute("SELECT sign_pub FROM pins WHERE user=?", (user,)).fetchone()
    finally:
        db.close()
    return bytes(key)


def set_pin(home: Path, user: str, key: bytes) -> None:
    db = sqlite3.connect(home / "cache.db")
    try:
        with db:
            db.execute("UPDATE pins SET sign_pub=? WHERE user=?", (key, user))
    finally:
        db.close()


def test_many_lines_are_sent_for_as_long_as_acks_keep_coming(people: dict[str, User]) -> None:
    """`send -` of more lines than its `--timeout` takes to send (the node
    takes 500 requests/s of a connection by default, after a burst of
    1,000: 4,000 lines take about 6 s): the timeout bounds the wait for each
    next acknowledgement, not for all of them, so a live server gets every
    line and the command exits 0."""
    alice = people["alice"]
    alice.run("init", "--user", "alice")
    alice.run("create", "bulk")
    lines = [f"line {i:05d}" for i in range(4_000)]
    got = alice.run("send", "bulk", "-", "--timeout", "3", stdin="\n".join(lines) + "\n", ok=False)
    assert got.returncode == 0, got.stderr[-600:]
    assert got.stdout.strip() == "sent 4000 message(s) to bulk"
    shown = alice.run("history", "bulk", "--limit", "3").stdout.splitlines()
    assert [ln.split(": ", 1)[1] for ln in shown] == lines[-3:]


def test_membership_mistakes_are_said_in_plain_words(people: dict[str, User]) -> None:
    """Promoting an admin, removing oneself: told before anything is signed,
    not as the membership rule the server would refuse it by."""
    alice, bob = people["alice"], people["bob"]
    for user in (alice, bob):
        user.run("init", "--user", user.name)
    alice.run("create", "team", "--members", "bob")
    alice.run("promote", "team", "bob")
    again = alice.run("promote", "team", "bob", ok=False)
    assert "[already_admin]" in again.stderr and "bob is already an admin of team" in again.stderr
    assert "requires that" not in again.stderr
    myself = alice.run("remove", "team", "alice", ok=False)
    assert "[forbidden]" in myself.stderr and "leave it" in myself.stderr


def test_a_line_too_long_in_send_input_is_named_and_nothing_goes(
    people: dict[str, User],
) -> None:
    alice = people["alice"]
    alice.run("init", "--user", "alice")
    alice.run("create", "lines")
    text = "one\n\n" + "x" * 16_001 + "\nthree\n"
    got = alice.run("send", "lines", "-", stdin=text, ok=False)
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert "error [too_large]: line 3 of the input: message of 16,001 characters" in got.stderr
    assert "nothing was sent" in got.stderr
    assert alice.history("lines") == []
