"""`send` to a node that answers but cannot serve (its store lost its
quorum: every sync is refused `store_unavailable`): the message is queued,
exit 75, and goes out once the node serves again; it is never dropped, nor
told `unreachable` as if no node had answered (README, operations.md)."""

from __future__ import annotations

from pathlib import Path

from .conftest import EvilServer
from support.cli import in_a_room


def test_a_send_to_a_node_whose_store_is_down_is_queued_and_goes_out_later(
    evil: EvilServer, tmp_path: Path
) -> None:
    alice, bob = in_a_room(evil, tmp_path, "r", "alice", "bob")

    evil.attack(store_down=True)
    got = alice.run("send", "r", "while the store is down", "--timeout", "8", ok=False)
    assert got.returncode == 75, got.stderr
    assert "1 message(s) queued for r" in got.stderr and "store_unavailable" in got.stderr
    history = alice.run("history", "r", "--timeout", "3", ok=False)  # from the cache
    assert history.returncode == 0 and "offline" in history.stderr

    evil.attack()
    alice.run("send", "r", "and after")
    assert [line.split(": ", 1)[1] for line in bob.run("history", "r").stdout.splitlines()] == [
        "while the store is down",
        "and after",
    ]
