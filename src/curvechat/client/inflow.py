"""How much a node sends a connection past what we confirmed reading (sans-IO).

The client's socket takes every frame in (curvechat/heartbeats.py), so what
bounds the frames it holds is the node's flow control (protocol.md,
section 7): a node withholds pushes from a connection while more than
4 MiB it sent are not confirmed read. The client confirms by echoing a
`push_mark` in a ping; the node notes it and then answers with a pong. So
every frame read after the pong to the echo of mark M was sent while the
node counted everything up to M as read, and an honest node has sent at
most its budget past M, besides its replies to our requests.

A node that sends more than `OVERRUN_BYTES` or `OVERRUN_FRAMES` past the
last mark so confirmed does not keep to flow control, and its frames pile
up in the client while it keeps that up; the reader is told to cut it.
Counted: every frame but a reply that answered a request of ours (those
are as many as our requests).

The bounds are far above an honest node's: four times its budget in bytes
(one lost pong still fits), and a frame count no honest node reaches with
pushes of at least 64 bytes.

This module must never do I/O nor decide what happens to the connection:
the reader asks it about each frame and acts on the answer.
"""

from __future__ import annotations

from typing import Final

OVERRUN_BYTES: Final = 16 * 1024 * 1024
"""Bytes past the last confirmed mark that cut a connection (an honest
node's budget is 4 MiB, server/flow.py `PER_CONNECTION`)."""
OVERRUN_FRAMES: Final = 65_536
"""Frames past the last confirmed mark that cut a connection (what libzmq
holds for a frame matters more than its bytes when frames are tiny)."""
MARKS_KEPT: Final = 8
"""Marks read and not yet confirmed that are remembered (the newest)."""


class Inflow:
    """One connection's frames, counted from its start."""

    __slots__ = (
        "_marks",
        "bytes",
        "frames",
        "max_bytes",
        "max_frames",
        "sure_bytes",
        "sure_frames",
    )

    def __init__(self, max_bytes: int = OVERRUN_BYTES, max_frames: int = OVERRUN_FRAMES) -> None:
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self.bytes = 0
        self.frames = 0
        self.sure_bytes = 0
        """`bytes` at the last mark the node confirmed it noted."""
        self.sure_frames = 0
        self._marks: dict[int, tuple[int, int]] = {}
        """mark -> (`bytes`, `frames`) when it was read, oldest first."""

    def took(self, size: int) -> bool:
        """A counted frame of `size` bytes was read; False when the node has
        now sent more past the last confirmed mark than it may."""
        self.bytes += size
        self.frames += 1
        return (
            self.bytes - self.sure_bytes <= self.max_bytes
            and self.frames - self.sure_frames <= self.max_frames
        )

    def marked(self, mark: int) -> None:
        """A `push_mark` was read (after `took` counted its frame)."""
        marks = self._marks
        marks.pop(mark, None)
        marks[mark] = (self.bytes, self.frames)
        if len(marks) > MARKS_KEPT:
            del marks[next(iter(marks))]

    def confirmed(self, mark: int) -> None:
        """The pong to a ping that echoed `mark` was read: the node counts
        everything up to it as read. A mark not read on this connection, or
        older than the one confirmed, changes nothing."""
        at = self._marks.pop(mark, None)
        if at is None or at[0] < self.sure_bytes:
            return
        self.sure_bytes, self.sure_frames = at
        for old in [k for k, (b, _) in self._marks.items() if b <= at[0]]:
            del self._marks[old]

    def overrun(self) -> str:
        """What the node sent past the last confirmed mark, in words."""
        return (
            f"{self.frames - self.sure_frames} frames, {self.bytes - self.sure_bytes} bytes"
            " past what it let us confirm reading"
        )
