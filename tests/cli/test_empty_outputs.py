"""An empty answer says so (on stderr, so stdout stays what a script
reads), and input that is dropped is counted (issue 16, item 5)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def test_empty_outputs_say_so(cli: Callable[[str], Any]) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    rooms = alice.run("rooms")
    assert rooms.stdout == "" and "no rooms yet" in rooms.stderr
    assert alice.run("rooms", "--json").stderr == ""  # --json: no rows, no words

    alice.run("create", "general")
    history = alice.run("history", "general")
    assert history.stdout == "" and "no messages in general yet" in history.stderr
    assert "no rooms" not in alice.run("rooms").stderr
    # an error is the one line, with nothing printed before it
    nobody = alice.run("keys", "nobody", ok=False)
    assert nobody.returncode == 1 and "[no_such_user]" in nobody.stderr
    assert nobody.stdout == ""


def test_blank_lines_sent_from_stdin_are_counted(cli: Callable[[str], Any]) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    alice.run("create", "general")
    sent = alice.run("send", "general", "-", stdin="one\n\n   \ntwo\n")
    assert "sent 2 message(s)" in sent.stdout
    assert "skipped 2 blank line(s)" in sent.stderr
    rows = [json.loads(ln) for ln in alice.run("history", "general", "--json").stdout.splitlines()]
    assert [r["text"] for r in rows] == ["one", "two"]

    blank = alice.run("send", "general", "-", stdin="\n \n\n", ok=False)
    assert blank.returncode == 2 and "[empty]" in blank.stderr
    assert "3 blank line(s)" in blank.stderr
    empty = alice.run("send", "general", "  ", ok=False)  # an argument, not lines
    assert empty.returncode == 2
    assert "[empty]: nothing to send: the message is empty or blank" in empty.stderr
