"""What the chat screen does with each of the engine's events: connection
status and the banner, messages in (and those found to be replays), your own
sends acked or failed, catch-up, rooms joined or left, peer-to-peer state,
key changes.

What this module must never do: send anything, or accept a key change (it
only opens the dialog that asks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.client import events as ev
from curvechat.client.enroll import key_refused
from curvechat.client.state import ConnState
from curvechat.tui.errors import Attempt, explain_code
from curvechat.tui.format import NO_ROOM, room_label
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.screens import keydialog
from curvechat.tui.widgets.composer import Composer
from curvechat.tui.widgets.status import Banner

MAX_PEER_UNREAD = 10_000
"""Messages taken peer to peer that a room's unread count adds at most."""

if TYPE_CHECKING:
    from curvechat.tui.screens.chat import ChatScreen


def handle(screen: ChatScreen, event: ev.Event) -> None:
    """Show what `event` changes on `screen`."""
    if isinstance(event, ev.StatusChanged):
        if event.status.state is ConnState.RECONNECTING:
            screen.query_one(Banner).was_lost = True
        _wrong_key(screen, event.status.state)
        screen.show_status()
    elif isinstance(event, ev.MessageReceived):
        _message_in(screen, event)
    elif isinstance(event, ev.ReplayMarked):
        room_log = screen.logs.get(event.room)
        marked = room_log is not None and room_log.mark_replay(event.seq, event.original)
        if marked and event.room == screen.current:
            screen.redraw()
    elif isinstance(event, ev.SendAcked):
        room_log = screen.logs.get(event.room)
        placed = room_log is not None and room_log.acked(
            event.txn, event.seq, event.ts_ms, screen.me
        )
        if placed and event.room == screen.current:
            screen.redraw()
    elif isinstance(event, ev.SendFailed):
        room_log = screen.logs.get(event.room)
        if room_log is not None:
            attempt = Attempt("send", room=room_label(event.room, screen.me))
            room_log.fail(event.txn, explain_code(event.code, event.message, attempt))
            if event.room == screen.current:
                screen.redraw()
    elif isinstance(event, ev.CaughtUp):
        _on_caught_up(screen, event.messages)
    elif isinstance(event, ev.RoomUpdated):
        _on_room_updated(screen, event)
    elif isinstance(event, ev.Problem):
        if event.room in (None, screen.current):
            screen.notice(event.message, "warning", reveal=False)
        else:  # in its room's timeline, read when the user goes there
            room_log = screen.logs.setdefault(event.room, RoomLog(event.room, screen.me))
            room_log.notice(event.message, screen.now_ms(), "warning")
    elif isinstance(event, ev.PeerStatus):
        if event.active and event.peers and not screen.peers_reached:
            screen.notice(
                "server unreachable: your messages go peer to peer to the members you can "
                "reach; invites, removals and new keys wait for the server",
                reveal=False,
            )
        screen.peers_reached = event.peers if event.active else 0
        screen.show_status()
    elif isinstance(event, ev.PeerMessage):
        room_log = screen.logs.get(event.room)
        if room_log is not None:
            room_log.add_pending(event.txn, event.text, event.sent_ms, sender=event.sender)
            if event.room == screen.current:
                screen.redraw()
        if event.room != screen.current:
            unread = screen.peer_unread.setdefault(event.room, set())
            if len(unread) < MAX_PEER_UNREAD:
                unread.add((event.sender, event.txn))
            if screen.mention_re.search(event.text):
                screen.mentions.add(event.room)
            screen.soon("rooms")
    elif isinstance(event, ev.KeyChangeDetected):
        screen.show_status()
        screen.app.call_later(keydialog.ask, screen, event.user)


def _message_in(screen: ChatScreen, event: ev.MessageReceived) -> None:
    msg = event.message
    if (taken := screen.peer_unread.get(msg.room)) is not None:
        taken.discard((msg.sender, msg.txn))  # the server's copy: counted by the cache
    room_log = screen.logs.get(msg.room)
    if room_log is not None:
        # also while its history loads: the load merges by seq, and this
        # may be the message that ends one of our pending entries
        room_log.add_message(msg)
    if msg.room == screen.current:
        screen.soon("read", "redraw", "rooms")
        return
    if not event.mine and msg.text and screen.mention_re.search(msg.text):
        screen.mentions.add(msg.room)
    screen.grown.add(msg.room)
    screen.soon("rooms")


def _on_caught_up(screen: ChatScreen, count: int) -> None:
    status = screen.client.status
    if not screen.connected_once:
        screen.connected_once = True
        app = screen.app
        if hasattr(app, "on_first_connect"):
            app.on_first_connect()
        # What people read to each other to know the connect string was not changed.
        for addr in screen.client.conn.addresses:
            if addr.endpoint == status.endpoint:
                where = addr.endpoint.removeprefix("tcp://")
                screen.notice(
                    f"connected to {where}, server fingerprint {addr.fingerprint}"
                    " (the one `curvechat serve` printed)",
                    reveal=False,
                )
    screen.query_one(Banner).caught_up(
        str(status.endpoint), count, lambda: screen.client.status.state is ConnState.LIVE
    )
    screen.show_status()
    if not screen.current:
        rooms = screen.room_ids()
        if rooms:
            screen.switch_room(rooms[0])
    screen.refresh_rooms()


def _wrong_key(screen: ChatScreen, state: ConnState) -> None:
    """Every node failed the CURVE handshake: waiting cannot help, so say
    once (until a connection is live again) what is wrong and what to do."""
    if state is ConnState.LIVE:
        screen.wrong_key_told = False
        return
    why = None if screen.wrong_key_told else key_refused(screen.client.conn)
    if why is None:
        return
    screen.wrong_key_told = True
    screen.error(
        f"{why}. Quit (Ctrl+Q) and start again with"
        " --server and the connect string the server printed."
    )


def _on_room_updated(screen: ChatScreen, event: ev.RoomUpdated) -> None:
    gone = event.reason in ("removed", "left")
    label = room_label(event.room, screen.me)
    if gone and event.room == screen.current:
        set_aside = screen.query_one(Composer).set_aside()
        screen.logs.pop(event.room, None)
        rooms = [r for r in screen.room_ids() if r != event.room]
        screen.switch_room(rooms[0] if rooms else NO_ROOM)
        # Said in the room shown now (the room left has no log any more).
        said = f"you left {label}" if event.reason == "left" else f"you were removed from {label}"
        if set_aside:
            said += "; the line you were typing was not sent (Up brings it back)"
        screen.notice(said, "warning")
    elif not gone and not screen.current and event.room in screen.room_ids():
        screen.switch_room(event.room)
    elif event.reason in ("added", "created") and event.room != screen.current:
        screen.current_log().notice(f"you are now a member of {label}", screen.now_ms())
        screen.redraw()
    screen.refresh_rooms()
