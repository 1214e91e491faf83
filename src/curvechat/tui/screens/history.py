"""How the chat screen reads a room's history from the engine: the newest
page when a room opens (or when the view follows the newest again after
some were left to the cache), merged with what came in or was sent while
it loaded, and older pages as the user scrolls up.

Each read is a worker on the screen. Loading the newest page has a group of
its own: loading an older page (an exclusive worker) must never cancel it,
or the room would stay unloaded and ignore every later message.

What this module must never do: send anything, or put an older page below
a gap (a page asked for before the room's log was trimmed is dropped, and
asked for again when scrolled up to).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work

from curvechat.protocol.errors import CurvechatError
from curvechat.tui.errors import Attempt, explain
from curvechat.tui.format import room_label
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from curvechat.tui.screens.chat import ChatScreen


@work(group="load")
async def load_room(screen: ChatScreen, room: str) -> None:
    """The newest page of `room`, merged with whatever came in (or was
    sent) while it loaded."""
    room_log = screen.logs.setdefault(room, RoomLog(room, screen.me))
    room_log.expect_newest()
    failed = False
    try:
        msgs = await screen.client.history(room, limit=screen.settings.page_size)
    except CurvechatError as exc:
        msgs, failed = [], True
        if room == screen.current:
            screen.error(explain(exc, Attempt("history", room=room_label(room, screen.me))))
    room_log.newest_page(msgs, failed=failed)
    for item in screen.client.pending(room):  # those shown already are skipped
        room_log.add_pending(item.txn, item.text, item.created_ms)
    for peer in screen.client.provisional(room):  # members' taken peer to peer
        if not peer.mine:
            room_log.add_pending(peer.txn, peer.text, peer.sent_ms, sender=peer.sender)
    if room == screen.current:
        screen.redraw()


def back_to_newest(screen: ChatScreen) -> bool:
    """The view follows the newest message again: the room takes every
    newer one again; True if some were left to the cache meanwhile (the
    newest page is read again, and drawn)."""
    room_log = screen.current_log()
    if room_log.has_newer:
        load_room(screen, screen.current)
        return True
    room_log.release_newer()
    return False


@work(group="older", exclusive=True)
async def load_older(screen: ChatScreen) -> None:
    """The page before the oldest message of the room on screen, if there is one."""
    room = screen.current
    room_log = screen.logs.get(room)
    timeline = screen.query_one(Timeline)
    if not room or room_log is None or not room_log.loaded or not room_log.has_older:
        return
    timeline.loading_older = True
    trims, before = room_log.trims, room_log.first_seq
    try:
        msgs = await screen.client.history(room, limit=screen.settings.page_size, before=before)
    except CurvechatError as exc:
        screen.error(explain(exc, Attempt("history", room=room_label(room, screen.me))))
        return
    finally:
        timeline.loading_older = False
    if room_log.trims != trims:  # it would sit below a gap: asked for again when scrolled up
        return
    added = room_log.prepend(msgs)
    first = room_log.first_seq
    room_log.has_older = bool(added) and first is not None and first > 1
    if room == screen.current:
        screen.redraw(anchor="keep")
