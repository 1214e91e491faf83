"""The status line (who, where, how well connected) and the connection
banner (lost, reconnecting in N s, back with M messages caught up).

Both show text that can come from a server (why a connection failed, the
endpoint a node pointed us to): it is made `visible` and never parsed as
markup."""

from __future__ import annotations

from collections.abc import Callable

from textual.timer import Timer
from textual.widgets import Static

from curvechat.client.state import ConnState, ConnStatus
from curvechat.protocol.text import visible


def status_text(me: str, status: ConnStatus, key_changes: list[str], peers: int = 0) -> str:
    """`peers`: members reached peer to peer in the last round (0: none, or
    the server is live)."""
    where = visible(status.endpoint) if status.endpoint else "no server"
    parts = [me, where, status.state.value]
    if peers and status.state is not ConnState.LIVE:
        noun = "member" if peers == 1 else "members"
        parts = [me, "server unreachable", f"peer-to-peer with {peers} {noun}"]
    if status.state is ConnState.LIVE and status.rtt_ms is not None:
        parts.append(f"rtt {status.rtt_ms:.0f} ms")
    text = " · ".join(parts)
    if key_changes:
        text += f"  ⚠ KEY CHANGED: {', '.join(key_changes)} (/keys)"
    return text


def banner_text(status: ConnStatus, now: float) -> str | None:
    """What the banner says for a connection that is not live (None: live)."""
    if status.state is ConnState.RECONNECTING:
        due = ""
        if status.next_retry_at is not None:
            due = f" in {max(0.0, status.next_retry_at - now):.1f} s"
        why = f" ({visible(status.detail)})" if status.detail else ""
        if status.moving:  # the node is draining: nothing failed
            return f"↪ moving to another node{why} · attempt {status.attempt + 1}{due}"
        return f"⚠ connection lost{why} · reconnect attempt {status.attempt + 1}{due}"
    if status.state is ConnState.CONNECTING:
        attempt = f" (attempt {status.attempt + 1})" if status.attempt else ""
        verb = "moving to" if status.moving else "connecting to"
        return f"{verb} {visible(str(status.endpoint))}{attempt}…"
    if status.state is ConnState.OFFLINE:
        return "offline"
    if status.state is ConnState.CLOSED:
        return "closed"
    return None


class StatusLine(Static):
    def __init__(self, content: str = "", *, id: str | None = None) -> None:
        super().__init__(content, markup=False, id=id)


BANNER_SECONDS = 10.0
"""How long "✓ reconnected … caught up" stays up."""


class Banner(Static):
    """Up while the connection is not live (`banner_text`); then "✓
    (re)connected · caught up N messages" for BANNER_SECONDS."""

    def __init__(self, content: str = "", *, id: str | None = None) -> None:
        super().__init__(content, markup=False, id=id)
        self.was_lost = False  # the connection was lost since the last catch-up
        self._timer: Timer | None = None

    def show_status(self, status: ConnStatus, now: float) -> None:
        text = banner_text(status, now)
        if text is not None:
            self._stop_timer()
            self.update(text)
            self.set_class(status.state is ConnState.RECONNECTING, "-lost")
            self.set_class(False, "-back")
            self.display = True
        elif self.was_lost and self.display and self.has_class("-lost"):
            self.update(f"connection is back ({visible(str(status.endpoint))}); catching up…")
            self.set_class(False, "-lost")

    def caught_up(self, endpoint: str, count: int, still_live: Callable[[], bool]) -> None:
        noun = "message" if count == 1 else "messages"
        verb = "reconnected" if self.was_lost else "connected"
        self.was_lost = False
        self.update(f"✓ {verb} to {visible(endpoint)} · caught up {count} {noun}")
        self.set_class(False, "-lost")
        self.set_class(True, "-back")
        self.display = True
        self._stop_timer()

        def hide() -> None:
            if still_live():
                self.display = False

        self._timer = self.set_timer(BANNER_SECONDS, hide)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
