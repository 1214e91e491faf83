"""Slash-command parsing and completion, without an app."""

from __future__ import annotations

import pytest

from curvechat.tui import commands as cmds


def test_parse_fixed_and_rest_arguments() -> None:
    inv = cmds.parse("/create general bob carol")
    assert (inv.spec.name, inv.args, inv.rest) == ("create", ("general",), "bob carol")
    inv = cmds.parse("/dm bob hello  there")
    assert (inv.args, inv.rest) == (("bob",), "hello  there")
    assert cmds.parse("/switch general").spec.name == "switch"
    assert cmds.parse("/j general").spec.name == "join"
    inv = cmds.parse("/p bob hi there")
    assert (inv.spec.name, inv.args, inv.rest) == ("msg", ("bob",), "hi there")
    inv = cmds.parse("/g general hello all")
    assert (inv.spec.name, inv.args, inv.rest) == ("g", ("general",), "hello all")
    assert cmds.parse("/list").spec.name == "rooms"
    assert cmds.parse("/exit").spec.name == "quit"
    assert cmds.parse("/a #team crew").args == ("#team", "crew")
    assert cmds.parse("/keys accept bob").args == ("accept", "bob")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/frobnicate", "unknown command /frobnicate"),
        ("/inv", "unknown command /inv (did you mean /invite?)"),
        ("/invite", "/invite: missing USER; usage: /invite USER"),
        ("/leave now", "/leave: too many arguments"),
        ("/", "type a command after '/'"),
        ("/qiut", "unknown command /qiut (did you mean /quit?)"),
        ("/lsit", "unknown command /lsit (did you mean /list?)"),
        ("/mgs bob hi", "unknown command /mgs (did you mean /msg?)"),
        ("/memebrs", "unknown command /memebrs (did you mean /members?)"),
        ("/msg bob", "/msg: missing TEXT; usage: /msg USER TEXT"),
        ("/p", "/p: missing USER; usage: /msg USER TEXT"),
        ("/g general", "/g: missing TEXT; usage: /g ROOM TEXT"),
        ("/g general   ", "/g: missing TEXT"),
        ("/a", "/a: missing NAME; usage: /a NAME [ALIAS]"),
        ("/a bob Bobby B", "/a: too many arguments"),
        ("/exit now", "/exit: too many arguments"),
        ("/list all", "/list: too many arguments"),
    ],
)
def test_mistakes_are_one_line(line: str, expected: str) -> None:
    with pytest.raises(cmds.CommandError) as err:
        cmds.parse(line)
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_words_are_apart_by_any_white_space() -> None:
    """A tab after the name, or an ideographic space (U+3000) before the
    text, separates words as a space does; the text keeps its own spaces."""
    tab = cmds.parse("/msg\tbob hi  there")
    assert (tab.name, tab.args, tab.rest) == ("msg", ("bob",), "hi  there")
    wide = cmds.parse("/g general\u3000hi")
    assert (wide.args, wide.rest) == (("general",), "hi")


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
    assert cmds.help_lines("switch")[0].startswith("/switch ROOM")
    assert cmds.help_lines("p")[0].startswith("/msg USER TEXT")
    assert "(also /exit)" in cmds.help_lines("quit")[0]
    assert "display name" in cmds.help_lines("a")[0]


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("/part", "leave"),
        ("/close", "leave"),
        ("/names", "members"),
        ("/kick bob", "remove"),
        ("/query bob", "dm"),
    ],
)
def test_irc_and_weechat_names_are_the_commands_the_table_maps_them_to(
    line: str, name: str
) -> None:
    """docs/tui.md, "Coming from IRC or weechat": each name works as what it maps to."""
    assert cmds.parse(line).spec.name == name


def test_an_alias_saved_by_hand_that_could_drive_the_terminal_is_left_out(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from curvechat.tui.settings import load_aliases, save_aliases

    save_aliases(tmp_path, {"bob": "Bobby", "#team": "[/x]", "carol": "\x1b]2;x", "dan": "a b"})
    assert load_aliases(tmp_path) == {"bob": "Bobby"}
