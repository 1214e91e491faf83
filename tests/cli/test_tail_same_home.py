"""`tail` while other processes of the same home store messages: two
`tail`s of one home, and `send`s from it, share one local cache; whichever
process stores a message first, every `tail` prints it (the engine tells
rows another process stored, `Parts.untold`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_every_tail_of_a_home_prints_every_message_whoever_stored_it(
    cli: Callable[[str], Any], tails: Callable[..., Any]
) -> None:
    alice, bob = cli("alice"), cli("bob")
    alice.run("init", "--user", "alice")
    bob.run("init", "--user", "bob")
    alice.run("create", "r", "--members", "bob")
    first, second = tails(bob, "r"), tails(bob, "r")
    for tail in (first, second):
        tail.err.until("following r")
    for i in range(3):
        bob.run("send", "r", f"bob own {i}")  # stored by the send, at its ack
        alice.run("send", "r", f"from alice {i}")  # stored by whichever tail is first
    for tail in (first, second):
        tail.out.until("from alice 2")
        printed = [line for line in tail.out.seen if ": " in line]
        texts = [line.split(": ", 1)[1] for line in printed]
        assert texts == [t for i in range(3) for t in (f"bob own {i}", f"from alice {i}")], texts
        seqs = [int(line.split("#", 1)[1].split(" ", 1)[0]) for line in printed]
        assert seqs == sorted(seqs)
