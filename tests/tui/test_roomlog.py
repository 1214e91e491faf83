"""The room log's trim (tui/roomlog.py), without a screen: the newest
messages kept, every notice and pending entry kept, and a count of trims
that tells a page asked for before one from a page asked for after."""

from __future__ import annotations

from curvechat.client.cache import CachedMessage
from curvechat.tui.roomlog import RoomLog


def _msg(seq: int) -> CachedMessage:
    return CachedMessage("r", seq, seq, "bob", f"t{seq}", seq, f"line {seq}", None)


def test_a_trim_keeps_the_newest_messages_notices_and_pending_and_counts_itself() -> None:
    log = RoomLog("r", "alice")
    log.newest_page([_msg(1)])
    log.notice("connected to ..., server fingerprint XYZ", 1)
    log.add_pending("mine", "not sent yet", 2)
    for s in range(2, 200):
        log.add_message(_msg(s))
    assert log.trims == 0
    log.trim(50)
    assert [e.seq for e in log.entries if e.kind == "message"] == list(range(150, 200))
    assert [e.kind for e in log.entries if e.kind != "message"] == ["notice", "pending"]
    assert log.has_older and log.trims == 1
    log.trim(50)  # nothing to drop: not counted
    assert log.trims == 1
    log.prepend([_msg(s) for s in range(100, 150)])  # scrolled back up
    assert [e.seq for e in log.entries if e.kind == "message"] == list(range(100, 200))
    assert any(e.kind == "notice" for e in log.entries)
    log.add_message(_msg(200))  # the pending entry still clears when its copy comes
    log.acked("mine", 201, 201, "alice")
    assert not any(e.kind == "pending" for e in log.entries)
