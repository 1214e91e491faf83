"""`curvechat tail` against a node that holds back a key: the message it
printed as unreadable is printed again once it opens, said to be an
earlier message (a line on stdout cannot be taken back), not passed off as
the newest (docs/security.md 4.3)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import EvilServer
from support.cli import Tail, in_a_room


def test_tail_says_a_message_opened_late_is_an_earlier_one(
    evil: EvilServer, tmp_path: Path
) -> None:
    alice, bob, _carol = in_a_room(evil, tmp_path, "r", "alice", "bob", "carol")
    alice.run("send", "r", "before")
    tail = Tail(bob, "r", "--json")
    try:
        tail.err.until("following r")
        evil.attack(withhold_keys="bob")
        alice.run("remove", "r", "carol")  # a new epoch, whose key the node keeps from bob
        alice.run("send", "r", "under the new key")
        unreadable = json.loads(tail.out.until('"error": "'))  # one that did not open
        assert unreadable["text"] is None and "late" not in unreadable

        evil.attack()  # the key packet is served from now on
        alice.run("send", "r", "and one more")
        opened = json.loads(tail.out.until("under the new key"))
        assert opened["seq"] == unreadable["seq"] and opened["late"] is True
        newest = json.loads(tail.out.until("and one more"))
        assert newest["seq"] > opened["seq"] and "late" not in newest
    finally:
        code = tail.stop()
    assert code == 0
