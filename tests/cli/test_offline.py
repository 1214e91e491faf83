"""The command line with no server (issue 15, item 1), against a real server
process that is stopped and started again: `send` queues and exits 75 at
once, `history` and `rooms` answer from the local cache and say so, the next
command that connects delivers each queued message exactly once, a wrong
server key is told as such without waiting, and the node that answered last
is tried first."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

NEVER = "600"
"""A connect timeout no test waits out: a command that returns at all
returned because it knew, not because it gave up waiting (the run helper
fails a command that takes a minute)."""


def rows(user: Any, *args: str) -> list[dict[str, Any]]:
    out = user.run("history", *args, "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def _pair(cli: Callable[[str], Any]) -> tuple[Any, Any]:
    alice, bob = cli("alice"), cli("bob")
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", "general", "--members", "bob")
    alice.run("send", "general", "before the outage")
    bob.run("rooms")  # bob's cache has the room
    return alice, bob


def test_send_queues_offline_and_the_next_send_delivers_it_once(
    cli: Callable[[str], Any],
) -> None:
    alice, bob = _pair(cli)
    alice.server.stop()

    t0 = time.monotonic()
    queued = alice.run("send", "general", "sent while the server was down", ok=False)
    elapsed = time.monotonic() - t0
    assert queued.returncode == 75, queued.stderr
    assert elapsed < 5.0, f"send took {elapsed:.1f} s with the server down"
    assert "offline" in queued.stderr and "1 message(s) queued" in queued.stderr
    assert queued.stdout == ""

    # history and rooms answer from the cache, and say so on stderr
    history = alice.run("history", "general")
    assert "before the outage" in history.stdout
    assert "offline" in history.stderr and "last synced 20" in history.stderr
    offline_rows = rows(alice, "general")
    assert [r["text"] for r in offline_rows] == ["before the outage"]
    assert all(r["offline"] is True and r["last_sync"].endswith("Z") for r in offline_rows)
    rooms = alice.run("rooms", "--json")
    (room,) = [json.loads(line) for line in rooms.stdout.splitlines()]
    assert room["room"] == "general" and room["offline"] is True
    assert "offline" in rooms.stderr

    alice.server.start()
    sent = alice.run("send", "general", "and after")
    assert "sent 1 queued message(s) from before" in sent.stderr
    assert "sent to general" in sent.stdout
    online = rows(alice, "general")
    assert [r["text"] for r in online] == [
        "before the outage",
        "sent while the server was down",
        "and after",
    ]
    assert all(r["offline"] is False for r in online)
    # once on the server: bob sees each message once, and another command sends nothing again
    assert "queued" not in alice.run("rooms").stderr
    assert [r["text"] for r in rows(bob, "general")] == [r["text"] for r in online]


def test_tail_delivers_what_send_queued_offline(
    cli: Callable[[str], Any], tails: Callable[..., Any]
) -> None:
    alice, bob = _pair(cli)
    alice.server.stop()
    assert alice.run("send", "general", "queued for tail", ok=False).returncode == 75
    alice.server.start()
    tail = tails(alice, "general")
    tail.err.until("sent 1 queued message(s) from before")
    tail.err.until("following general")
    bob.run("send", "general", "seen it")
    tail.out.until("seen it")
    assert tail.stop() == 0
    texts = [r["text"] for r in rows(bob, "general")]
    assert texts == ["before the outage", "queued for tail", "seen it"]


def test_a_long_backlog_goes_out_first_and_what_is_said_of_it_is_true(
    cli: Callable[[str], Any],
) -> None:
    """Thousands of messages left in the outbox (by `send -` offline here, as
    by one killed mid-way): the next `send` waits for them as long as they
    keep being acknowledged, longer in all than its --timeout, sends its own
    after them, and says nothing that is not true when it exits."""
    alice, bob = _pair(cli)
    alice.server.stop()
    backlog = [f"backlog {i}" for i in range(2500)]
    queued = alice.run("send", "general", "-", stdin="\n".join(backlog), ok=False)
    assert queued.returncode == 75, queued.stderr
    assert _outbox(alice) == 2500
    alice.server.start()

    t0 = time.monotonic()
    sent = alice.run("send", "general", "after the backlog", "--timeout", "2", ok=False)
    elapsed = time.monotonic() - t0
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == "sent to general\n"
    assert "not yet acknowledged" not in sent.stderr
    told = re.findall(r"sent (\d+)(?: more)? queued message\(s\) from before", sent.stderr)
    assert sum(map(int, told)) == 2500, sent.stderr
    assert elapsed > 2, "the backlog took less than one --timeout: nothing was shown"
    assert _outbox(alice) == 0
    want = ["before the outage", *backlog, "after the backlog"]
    for user in (alice, bob):
        assert [r["text"] for r in rows(user, "general", "--limit", "3000")] == want


def _outbox(user: Any) -> int:
    with contextlib.closing(sqlite3.connect(user.home / "cache.db")) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def test_commands_that_need_the_server_still_say_unreachable(cli: Callable[[str], Any]) -> None:
    alice, _bob = _pair(cli)
    alice.server.stop()
    for args in (("create", "other"), ("members", "general"), ("dm", "carol", "hi")):
        proc = alice.run(*args, "--connect-timeout", NEVER, ok=False)
        assert proc.returncode == 3 and "[unreachable]" in proc.stderr, proc.stderr
        assert "no server is listening at 127.0.0.1:" in proc.stderr
    # a direct-message room the cache knows takes a queued message
    alice.server.start()
    alice.run("dm", "bob", "first")
    alice.server.stop()
    assert alice.run("dm", "bob", "second", ok=False).returncode == 75
    alice.server.start()
    alice.run("rooms")
    assert [r["text"] for r in rows(alice, "@bob")] == ["first", "second"]


def test_a_wrong_server_key_is_a_key_mismatch_at_once(cli: Callable[[str], Any]) -> None:
    alice, _bob = _pair(cli)
    connect = alice.server.connect
    key = connect.rsplit("/", 1)[1]
    wrong = connect.replace(key, ("b" if key[0] == "a" else "a") + key[1:])
    assert wrong != connect
    for args in (("rooms",), ("send", "general", "to the wrong server")):
        proc = alice.run(
            *args, "--server", wrong, "--connect-timeout", NEVER, ok=False, server=False
        )
        assert proc.returncode == 1, proc.stderr
        assert "[key_mismatch]" in proc.stderr and "CURVE handshake" in proc.stderr
        assert "Traceback" not in proc.stderr
    # nothing was queued for a server whose key is wrong
    assert "queued" not in alice.run("send", "general", "right key").stderr
    assert "to the wrong server" not in [r["text"] for r in rows(alice, "general")]


@pytest.fixture
def silent() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word: a node
    that hangs (the kernel completes the handshake, nothing answers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_the_node_that_answered_last_is_tried_first(cli: Callable[[str], Any], silent: str) -> None:
    alice, _bob = _pair(cli)
    live = alice.server.connect
    hung = live.replace(f"127.0.0.1:{alice.server.port}", silent)
    both = f"{hung},{live}"
    # first time: the hung node costs its share of the connect timeout (4 s of 8)
    first = alice.run("rooms", "--server", both, "--connect-timeout", "8", server=False)
    assert "general" in first.stdout and "offline" not in first.stderr
    # then the live node is tried first: a hung first node would take 300 s here
    for _ in range(2):
        again = alice.run("rooms", "--server", both, "--connect-timeout", NEVER, server=False)
        assert "general" in again.stdout and "offline" not in again.stderr
