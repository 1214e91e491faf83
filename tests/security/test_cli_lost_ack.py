"""`send` whose message the node stored but whose ack never came: exit 75,
and the note does not claim the message is still to go out (it may have
reached the server); the next command that connects sends it again, and
the server keeps it once."""

from __future__ import annotations

from pathlib import Path

from .conftest import EvilServer
from support.cli import in_a_room


def test_a_send_whose_ack_is_lost_is_sent_again_and_kept_once(
    evil: EvilServer, tmp_path: Path
) -> None:
    alice, bob = in_a_room(evil, tmp_path, "r", "alice", "bob")

    evil.attack(lose_acks=True)
    got = alice.run("send", "r", "stored, never acked", "--timeout", "2", ok=False)
    assert got.returncode == 75, got.stderr
    assert "may have reached the server already" in got.stderr
    assert "(the server keeps each once)" in got.stderr
    evil.attack()
    assert [ln.split(": ", 1)[1] for ln in bob.run("history", "r").stdout.splitlines()] == [
        "stored, never acked"
    ]
    again = alice.run("send", "r", "next")
    assert "sent 1 queued message(s) from before" in again.stderr
    assert [ln.split(": ", 1)[1] for ln in bob.run("history", "r").stdout.splitlines()] == [
        "stored, never acked",
        "next",
    ]


def test_a_queued_send_refused_for_good_later_is_said(evil: EvilServer, tmp_path: Path) -> None:
    """Removed from the room before the next command resends it: that
    command says the message was not sent, and why."""
    bob, alice = in_a_room(evil, tmp_path, "r", "bob", "alice")
    evil.attack(lose_acks=True)
    got = alice.run("send", "r", "stored, never acked", "--timeout", "2", ok=False)
    assert got.returncode == 75, got.stderr
    evil.attack()
    bob.run("remove", "r", "alice")
    later = alice.run("rooms")
    assert "a queued message for r from before was not sent [not_member]" in later.stderr
