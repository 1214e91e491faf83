"""The room log's trim (tui/roomlog.py), without a screen: the newest
messages kept, every pending entry and the newest notices kept, and a count
of trims that tells a page asked for before one from a page asked for
after."""

from __future__ import annotations

from curvechat.client.cache import CachedMessage
from curvechat.tui.roomlog import KEPT_NOTICES, RoomLog


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


def _seqs(log: RoomLog) -> list[int]:
    return [e.seq for e in log.entries if e.kind == "message"]


def test_a_held_log_takes_so_many_newer_messages_then_leaves_them_to_the_newest_page() -> None:
    """Scrolled up while a flood comes in: the log takes `room_for` newer
    messages, then none (not ours acked either); older ones still come in
    their place; the newest page, read again, brings the rest back in order."""
    log = RoomLog("r", "alice")
    log.newest_page([_msg(s) for s in range(1, 11)])
    log.add_pending("mine", "sent while scrolled up", 11)
    log.hold_newer(5)
    log.hold_newer(500)  # a hold in place stays as it is
    for s in range(11, 40):
        log.add_message(_msg(s))
    assert _seqs(log) == list(range(1, 16)) and log.held and log.has_newer
    assert log.acked("mine", 40, 40, "alice")  # no longer pending; in the cache only
    assert 40 not in _seqs(log) and not any(e.kind == "pending" for e in log.entries)
    log.add_message(_msg(0))  # opened late, far back: still placed (not newer)
    assert _seqs(log)[0] == 0
    log.release_newer()  # something was left out: only the newest page ends the hold
    assert log.held
    log.expect_newest()  # the page is read; what comes in meanwhile is taken
    log.add_message(_msg(41))
    log.newest_page([_msg(s) for s in range(31, 41)])
    assert _seqs(log) == list(range(31, 42))
    assert not log.held and not log.has_newer and log.has_older


def test_a_held_log_that_left_nothing_out_takes_everything_again() -> None:
    log = RoomLog("r", "alice")
    log.newest_page([_msg(1)])
    log.hold_newer(5)
    log.add_message(_msg(2))
    log.release_newer()
    for s in range(3, 20):
        log.add_message(_msg(s))
    assert _seqs(log) == list(range(1, 20)) and not log.has_newer


def test_a_flood_of_notices_keeps_the_newest_and_every_message() -> None:
    log = RoomLog("den", "alice", loaded=True)
    log.add_message(CachedMessage("den", 1, 1000, "bob", "t1", 0, "hello", None))
    for i in range(KEPT_NOTICES + 100):
        log.notice(f"problem {i}", 2000 + i, "warning")
    notices = [e.text for e in log.entries if e.kind == "notice"]
    assert len(notices) == KEPT_NOTICES
    assert notices[0] == "problem 100" and notices[-1] == f"problem {KEPT_NOTICES + 99}"
    assert [e.text for e in log.entries if e.kind == "message"] == ["hello"]
