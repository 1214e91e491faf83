"""The one sanitizer every front end uses for text it does not control."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curvechat.protocol.text import (
    placeholder,
    split_lines,
    visible,
    visible_lines,
    visible_parts,
)

from support.hostile_text import BENIGN, CORPUS, FORGED_CLI, FORGED_TUI, unsafe


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_nothing_in_the_corpus_reaches_the_terminal(name: str) -> None:
    text = CORPUS[name]
    assert unsafe(text) or "\n" in text or name in ("markup", "soft_wrap_forgery")  # the control
    shown = visible(text)
    assert unsafe(shown) == []
    assert "\n" not in shown
    for line in visible_lines(text):
        assert unsafe(line) == [] and "\n" not in line


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_ordinary_text_is_unchanged(name: str) -> None:
    assert visible(BENIGN[name]) == BENIGN[name]
    assert visible_lines(BENIGN[name]) == [BENIGN[name]]


def test_placeholders_are_python_escapes() -> None:
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("x\r\ny\tz\x00") == "x\\r\\ny\\tz\\x00"
    assert visible("\x9b31m") == "\\x9b31m"
    assert visible("\x7f") == "\\x7f"
    assert visible("\u202eevil") == "\\u202eevil"
    assert visible("\U000e0041") == "\\U000e0041"
    assert visible("\ud800") == "\\ud800"  # a lone surrogate would make printing fail
    assert [placeholder(c) for c in "\x1b\u2066\u200b"] == ["\\x1b", "\\u2066", "\\u200b"]


def test_escape_sequences_lose_their_escape_and_keep_their_text() -> None:
    assert visible(CORPUS["osc52_clipboard"]).startswith("\\x1b]52;c;")
    assert visible(CORPUS["osc52_clipboard"]).endswith("\\x07")
    assert visible(CORPUS["osc8_link"]) == (
        "\\x1b]8;;https://evil.example/\\x1b\\click me\\x1b]8;;\\x1b\\"
    )


def test_the_parts_mark_placeholders() -> None:
    assert list(visible_parts("ok\x1b[2J\u202e!")) == [
        ("ok", False),
        ("\\x1b", True),
        ("[2J", False),
        ("\\u202e", True),
        ("!", False),
    ]
    assert list(visible_parts("")) == []


def test_joiners_are_kept_only_between_visible_characters() -> None:
    assert visible("a\u200db") == "a\u200db"
    assert visible("\u200d") == "\\u200d"
    assert visible("a\u200d") == "a\\u200d"
    assert visible("\u200ca") == "\\u200ca"
    assert visible("a \u200db") == "a \\u200db"
    assert visible("a\u200d\u200db") == "a\\u200d\\u200db"
    assert visible("a\u200d\x1bb") == "a\\u200d\\x1bb"


def test_tags_are_kept_only_in_a_subdivision_flag() -> None:
    flag = BENIGN["scotland"]
    assert visible(flag + " " + flag) == flag + " " + flag
    smuggled = CORPUS["tag_smuggling"]
    assert visible(smuggled) == "hi" + "".join(f"\\U{ord(c):08x}" for c in smuggled[2:])
    # a flag with a code too long to be one hides ASCII: every tag is shown
    long = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbengland") + "\U000e007f"
    assert unsafe(visible(long)) == []

    # thousands of flags with controls between them: each flag kept, each
    # control and each stray tag shown (the flags are looked up, not scanned)
    stray = "\U000e0041"
    text = (flag + "\x00" + stray) * 1_000
    parts = list(visible_parts(text))
    assert "".join(p for p, _ in parts) == (flag + "\\x00\\U000e0041") * 1_000
    assert [p for p, unsafe_part in parts if unsafe_part][:2] == ["\\x00\\U000e0041"] * 2


def test_lines_split_at_newlines_only() -> None:
    assert visible_lines(CORPUS["forged_cli_line"]) == ["see below", FORGED_CLI]
    assert visible_lines(CORPUS["forged_cli_crlf"]) == ["see below", FORGED_CLI]
    assert visible_lines(CORPUS["forged_tui_line"]) == ["see below", FORGED_TUI]
    assert visible_lines("a\x0bb\x0cc\x85d\u2028e\u2029f\rg") == [
        "a\\x0bb\\x0cc\\x85d\\u2028e\\u2029f\\rg"
    ]
    assert visible_lines("") == [""]
    assert split_lines("a\n\nb\n") == ["a", "", "b", ""]


_DANGEROUS = ("Cc", "Cf", "Zl", "Zp", "Cs")


@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=60))
def test_any_text(text: str) -> None:
    shown = visible(text)
    assert visible(shown) == shown  # placeholders are plain ASCII: nothing left to do
    for i, ch in enumerate(shown):
        if unicodedata.category(ch) not in _DANGEROUS:
            continue
        if ch in "\u200c\u200d":  # a joiner, between two visible characters
            assert 0 < i < len(shown) - 1
            assert shown[i - 1].isprintable() and shown[i + 1].isprintable()
        else:  # a tag of a subdivision flag
            assert 0xE0020 <= ord(ch) <= 0xE007F, ascii(ch)
    lines = visible_lines(text)
    assert len(lines) == len(split_lines(text))
    assert all("\n" not in line for line in lines)
