"""What `tail` prints for the engine's message events (cli/follow.py
`MessageLines`): a line cannot be taken back, so a message that opens late
(below what was printed: its key came after it, or a node served it again)
and a printed message that turns out a replay are said, in text and JSON."""

from __future__ import annotations

import json

from curvechat.cli.follow import MessageLines
from curvechat.client.model import CachedMessage

TS = 1_767_000_000_000


def _msg(seq: int, text: str | None = "hi", error: str | None = None) -> CachedMessage:
    return CachedMessage("r", seq, TS + seq, "bob", f"t{seq}", TS, text, error)


def test_messages_in_order_come_without_a_note() -> None:
    lines = MessageLines("r", as_json=False)
    for seq in (1, 2, 5):
        note, line = lines.message(_msg(seq))
        assert note is None and f"#{seq} bob: hi" in line


def test_a_message_that_opens_below_what_was_printed_is_said_to_be_earlier() -> None:
    lines = MessageLines("r", as_json=False)
    lines.message(_msg(3, None, "no key for epoch 2"))
    lines.message(_msg(4))
    note, line = lines.message(_msg(3, "the key came"))
    assert note == "-- #3 is an earlier message, opened only now"
    assert "#3 bob: the key came" in line
    assert lines.message(_msg(5))[0] is None


def test_a_message_below_the_cache_cursor_at_the_start_is_late_too() -> None:
    lines = MessageLines("r", as_json=True)
    lines.top = 40  # what the cache held when tail started
    _, line = lines.message(_msg(12))
    assert json.loads(line)["late"] is True
    _, line = lines.message(_msg(41))
    assert "late" not in json.loads(line)


def test_a_replay_is_said_in_text_and_json() -> None:
    note, line = MessageLines("r", as_json=False).replay(9, 4)
    assert line is None and note is not None
    assert note.startswith("-- #9 was a replay of #4")
    note, line = MessageLines("r", as_json=True).replay(9, 4)
    assert note is None and line is not None
    assert json.loads(line) == {"room": "r", "seq": 9, "replay_of": 4}
