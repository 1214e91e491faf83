"""The real `curvechat chat` in a terminal (tmux), over a link with 150 ms
each way: long messages (1,000 to 16,000 characters, pasted as a terminal
pastes) leave "pending" when acked and stay in view, in the first room and
in a room opened after it, and the short message after them too."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from .test_first_run import Tmux, init_user
from .test_pending import end_mark, long_text
from support.servers import ServerProcess


def sent(tmux: Tmux, text: str, tag: str, *, page_down: bool = False) -> None:
    """Paste `text`, press Enter; wait until its end is on the screen and
    nothing there is pending (`page_down`: pressing PgDn, as a user would
    to look for it)."""
    tmux.paste(text)
    end = end_mark(text, tag)

    def acked(pane: str) -> bool:
        if page_down:
            tmux("send-keys", "-t", "chat", "PageDown")
        return end in pane and "pending" not in pane

    tmux.wait(acked, f"{tag} acked and in view")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_long_messages_leave_pending_in_a_terminal(
    server: ServerProcess, slow_link: str, tmp_path: Path
) -> None:
    home = tmp_path / "hana"
    init_user(server, home, "hana", "hana's secret")
    tmux = Tmux(f"curvechat-test-{uuid.uuid4().hex[:8]}")
    tmux.start_chat(home, "TZ=UTC", f"CURVECHAT_SERVER={slow_link}")
    try:
        tmux.unlock("hana's secret")
        tmux.type("/create one")
        tmux.wait(lambda pane: "created #one" in pane, "the room")
        for n in (1_000, 4_000, 16_000):
            sent(tmux, long_text(n, f"one-{n}"), f"one-{n}")
        sent(tmux, "short <one-short-end>", "one-short")
        tmux.type("/create two")
        tmux.wait(lambda pane: "created #two" in pane, "the second room")
        sent(tmux, long_text(2_000, "two"), "two")
        sent(tmux, "short <two-short-end>", "two-short")
        tmux.quit()
        assert not tmux.alive(), "curvechat chat did not exit on /quit"
    finally:
        tmux("kill-server")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_room_opened_after_a_long_message_in_a_terminal(
    server: ServerProcess, slow_link: str, tmp_path: Path
) -> None:
    """The second room's history loads over the slow link while the first is
    scrolled down: its messages leave pending too (PgDn pressed while
    waiting, so this is about pending, not about the view)."""
    home = tmp_path / "ivan"
    init_user(server, home, "ivan", "ivan's secret")
    tmux = Tmux(f"curvechat-test-{uuid.uuid4().hex[:8]}")
    tmux.start_chat(home, "TZ=UTC", f"CURVECHAT_SERVER={slow_link}")
    try:
        tmux.unlock("ivan's secret")
        tmux.type("/create one")
        tmux.wait(lambda pane: "created #one" in pane, "the room")
        sent(tmux, long_text(3_000, "one"), "one", page_down=True)
        tmux.type("/create two")
        tmux.wait(lambda pane: "created #two" in pane, "the second room")
        sent(tmux, long_text(1_000, "two"), "two", page_down=True)
        sent(tmux, "short <two-short-end>", "two-short", page_down=True)
    finally:
        tmux("kill-server")
