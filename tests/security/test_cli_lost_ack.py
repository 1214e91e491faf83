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


def test_the_code_of_a_queued_send_refused_later_reaches_the_terminal_as_text(
    evil: EvilServer, tmp_path: Path
) -> None:
    """A server that refuses the resend with control, escape and bidi
    characters in its error code: the note shows them as visible text."""
    alice, _bob = in_a_room(evil, tmp_path, "r", "alice", "bob")
    evil.attack(lose_acks=True)
    got = alice.run("send", "r", "queued", "--timeout", "2", ok=False)
    assert got.returncode == 75, got.stderr
    evil.attack(send_error={"code": "x\x1b]2;owned\x07\x1b[2J\u202e", "message": "m\x1b[31m"})
    later = alice.run("rooms", ok=False)
    assert "was not sent" in later.stderr, later.stderr
    for bad in ("\x1b", "\x07", "\u202e"):
        assert bad not in later.stderr, repr(later.stderr)
        assert bad not in later.stdout, repr(later.stdout)
