"""What the peer listener takes in from each connection (client/peer/intake.py),
driven without sockets."""

from __future__ import annotations

from curvechat.client.peer.intake import CUT_AFTER, CUT_KEPT, PENDING, Intake, Take


def test_a_connection_has_at_most_pending_frames_taken_and_the_rest_refused() -> None:
    intake = Intake()
    assert [intake.frame(b"a", None) for _ in range(PENDING)] == [Take.TAKE] * PENDING
    assert intake.frame(b"a", None) is Take.REFUSE  # its answers not yet given
    assert intake.frame(b"b", None) is Take.TAKE  # another connection is not held up
    intake.answered(b"a")
    assert intake.frame(b"a", None) is Take.TAKE  # a place freed


def test_what_the_pacing_refuses_is_refused_and_counts_toward_the_cut() -> None:
    intake = Intake()
    assert intake.frame(b"a", "rate_limited") is Take.REFUSE
    assert intake.frame(b"a", None) is Take.TAKE  # a frame taken ends the run of refusals
    takes = [intake.frame(b"a", "rate_limited") for _ in range(CUT_AFTER)]
    assert takes == [Take.REFUSE] * (CUT_AFTER - 1) + [Take.CUT]
    assert intake.cuts == 1
    # what it still sends, and was read before the cut took effect, is dropped
    assert intake.frame(b"a", None) is Take.DROP
    assert intake.frame(b"b", None) is Take.TAKE


def test_a_connection_that_does_not_wait_for_its_answers_is_cut() -> None:
    intake = Intake()
    takes = [intake.frame(b"a", None) for _ in range(PENDING + CUT_AFTER)]
    assert takes.count(Take.TAKE) == PENDING and takes[-1] is Take.CUT


def test_what_it_remembers_is_bounded() -> None:
    intake = Intake(cut_after=1)
    for i in range(CUT_KEPT + 10):
        assert intake.frame(b"c%d" % i, "rate_limited") is Take.CUT
    assert (
        intake.frame(b"c0", None) is Take.TAKE
    )  # long forgotten: its id is never handed out again
    assert intake.frame(b"c%d" % (CUT_KEPT + 9), None) is Take.DROP
    intake = Intake()
    for i in range(CUT_KEPT * 3):
        intake.frame(b"r%d" % i, "rate_limited")
    assert len(intake._refused) <= CUT_KEPT + 1
    for _ in range(PENDING):
        intake.answered(b"nobody")  # (answers of what was never taken change nothing)
    assert intake.frame(b"a", None) is Take.TAKE
