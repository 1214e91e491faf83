"""A server that gives messages absurd times: a server timestamp may be
anything up to 2**53 ms on the wire (year 287,396), past what a calendar
date holds. The CLI shows every message anyway (the time marked as out of
range, `null` in `--json`): no traceback, nothing hidden, and nothing in
the cache that breaks a later command."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import EvilServer
from support.cli import Tail, in_a_room

ABSURD = 2**53


def test_a_message_at_an_absurd_server_time_is_shown(evil: EvilServer, tmp_path: Path) -> None:
    alice, bob = in_a_room(evil, tmp_path, "r", "alice", "bob")
    alice.run("send", "r", "before")
    assert "before" in bob.run("history", "r").stdout  # cached at its true time
    evil.attack(server_ts=ABSURD)
    alice.run("send", "r", "hello")
    got = bob.run("history", "r", ok=False)
    assert got.returncode == 0, got.stderr[-600:]
    assert "Traceback" not in got.stderr
    lines = got.stdout.splitlines()
    assert [ln.split(": ", 1)[1] for ln in lines] == ["before", "hello"]
    assert "time out of range" in lines[1]
    # Cached as it came: later commands, and an honest server, show it too.
    evil.attack()
    alice.run("send", "r", "later")
    again = bob.run("history", "r", "--json")
    records = [json.loads(ln) for ln in again.stdout.splitlines()]
    assert [r["text"] for r in records] == ["before", "hello", "later"]
    assert records[1]["ts"] is None and records[0]["ts"] and records[2]["ts"]


def test_an_ack_at_an_absurd_time_leaves_the_senders_history_whole(
    evil: EvilServer, tmp_path: Path
) -> None:
    alice, _bob = in_a_room(evil, tmp_path, "r", "alice", "bob")
    evil.attack(ack_ts=ABSURD)
    alice.run("send", "r", "mine")
    evil.attack()
    got = alice.run("history", "r", ok=False)
    assert got.returncode == 0, got.stderr[-600:]
    assert "mine" in got.stdout


def test_tail_prints_a_message_pushed_at_an_absurd_time(evil: EvilServer, tmp_path: Path) -> None:
    alice, bob = in_a_room(evil, tmp_path, "r", "alice", "bob")
    tail = Tail(bob, "r")
    try:
        tail.err.until("-- following r")
        evil.attack(server_ts=ABSURD)
        alice.run("send", "r", "pushed")
        evil.attack()
        alice.run("send", "r", "marker")
        tail.out.until("marker")
        assert any("pushed" in ln for ln in tail.out.seen), (tail.out.seen, tail.err.drain(1))
    finally:
        tail.stop()
