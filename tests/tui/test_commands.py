"""Slash-command parsing and completion, without an app."""

from __future__ import annotations

import pytest

from curvechat.tui import commands as cmds


def test_parse_fixed_and_rest_arguments() -> None:
    inv = cmds.parse("/create general bob carol")
    assert (inv.spec.name, inv.args, inv.rest) == ("create", ("general",), "bob carol")
    inv = cmds.parse("/dm bob hello  there")
    assert (inv.args, inv.rest) == (("bob",), "hello  there")
    assert cmds.parse("/switch general").spec.name == "join"
    assert cmds.parse("/keys accept bob").args == ("accept", "bob")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/frobnicate", "unknown command /frobnicate"),
        ("/inv", "unknown command /inv (did you mean /invite?)"),
        ("/invite", "/invite: missing USER; usage: /invite USER"),
        ("/leave now", "/leave: too many arguments"),
        ("/", "type a command after '/'"),
    ],
)
def test_mistakes_are_one_line(line: str, expected: str) -> None:
    with pytest.raises(cmds.CommandError) as err:
        cmds.parse(line)
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_completion() -> None:
    rooms, users = ["#general", "#games", "@bob"], ["bob", "carol"]
    assert cmds.complete("/inv", rooms, users) == "ite "
    assert cmds.complete("/invite ca", rooms, users) == "rol"
    assert cmds.complete("/join #gen", rooms, users) == "eral"
    assert cmds.complete("/join #g", rooms, users) == ""  # two rooms match
    assert cmds.complete("/join #ga", rooms, users) == "mes"
    assert cmds.complete("/create x b", rooms, users) == "ob"
    assert cmds.complete("/keys accept c", rooms, users) == "arol"
    assert cmds.complete("hello /inv", rooms, users) == ""
    assert cmds.is_command("/help") and not cmds.is_command("//not a command")


def test_help_lists_every_command() -> None:
    text = "\n".join(cmds.help_lines())
    for spec in cmds.COMMANDS:
        assert spec.usage in text
    assert cmds.help_lines("switch")[0].startswith("/join ROOM")
