"""The main screen: rooms on the left, the room's history in the centre, the
input line at the bottom, a status line and a connection banner.

It reacts to the engine's events (delivered as `EngineEvent` messages on the
app's loop; engine_events.py says what each one changes), reads the rooms'
pages of history (history.py) and runs the slash commands (slash.py, and
familiar.py for the IRC-style ones). Every error a user can cause ends as
one sentence in the timeline (`tui.errors`), its code and details in the
log, never a traceback.

Your own message is "pending" from the moment it is queued until the engine
says the server acknowledged it (`SendAcked`, or the message itself coming
back by push, sync or ack, whichever is first), in any room and whether or
not the room's history has finished loading.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from curvechat.client.errors import CacheWriteFailed, KeyChanged
from curvechat.client.state import ConnState
from curvechat.protocol.errors import CurvechatError
from curvechat.protocol.text import visible
from curvechat.tui import commands as cmds
from curvechat.tui.errors import Attempt, explain
from curvechat.tui.format import NO_ROOM, room_label, shown_name
from curvechat.tui.keys import pending_changes, trust_mark
from curvechat.tui.messages import (
    EngineEvent,
    FollowingAgain,
    LineSubmitted,
    OlderWanted,
    RoomChosen,
    StoppedFollowing,
)
from curvechat.tui.roomlog import NoticeLevel, RoomLog
from curvechat.tui.screens import engine_events, history, keydialog, slash
from curvechat.tui.settings import ChatSettings, load_aliases
from curvechat.tui.widgets.composer import Composer
from curvechat.tui.widgets.rooms import RoomList, RoomRow
from curvechat.tui.widgets.status import Banner, StatusLine, status_text
from curvechat.tui.widgets.timeline import Anchor, Timeline

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient
    from curvechat.tui.screens.keychange import KeyChangeScreen

BURST_S = 0.1
"""Messages coming in are shown, and the room marked read, this often at most."""
KEPT_MESSAGES = 2_000
"""Messages of the room on screen kept in memory while the view follows the
newest: older ones are read again from the cache when scrolled up to."""


class ChatScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "next_room", "Next room", id="room.next"),
        Binding("ctrl+b", "prev_room", "Prev room", id="room.prev"),
        Binding("ctrl+o", "focus_rooms", "Rooms", id="room.focus"),
        Binding("ctrl+t", "review_keys", "Keys", id="keys.review"),
        Binding("ctrl+r", "reconnect", "Reconnect", id="conn.retry"),
        Binding("f1", "help", "Help", id="app.help"),
        Binding("pageup", "older", "Older", id="timeline.page_up", priority=True, show=False),
        Binding("pagedown", "newer", "Newer", id="timeline.page_down", priority=True, show=False),
        Binding("escape", "focus_input", "Input", id="input.focus", show=False),
    ]

    def __init__(self, client: ChatClient, settings: ChatSettings) -> None:
        super().__init__()
        self.client = client
        self.settings = settings
        self.me: str = client.me
        self.logs: dict[str, RoomLog] = {}
        self.current: str = NO_ROOM
        self.mentions: set[str] = set()
        self.peer_unread: dict[str, set[tuple[str, str]]] = {}
        """Per room not on screen, the (sender, txn) of messages taken peer
        to peer since it was: unread, and in no cache count until the
        server's copy comes."""
        self.aliases = load_aliases(settings.home)
        self.peers_reached = 0
        """Members reached peer to peer while the server is unreachable."""
        self.wrong_key_told = False
        """Told that every node failed the CURVE handshake (until live again)."""
        self.connected_once = False
        self.key_dialogs: dict[str, KeyChangeScreen] = {}
        """Users whose key-change dialog is open, with it (keydialog.py)."""
        self.mention_re = re.compile(rf"(?<![\w@.-])@?{re.escape(self.me)}(?![\w-])")
        self._due: set[str] = set()
        """What messages that came in still ask for ("read", "redraw", "rooms"),
        done together at most every BURST_S: a burst of thousands costs a
        few renders, not one each."""
        self.grown: set[str] = set()
        """Rooms not on screen that messages came in for: trimmed to their
        newest KEPT_MESSAGES with what `_due` asks for."""

    # --- layout ---------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Banner("", id="banner")
        with Horizontal(id="main"):
            yield RoomList(id="rooms")
            with Vertical(id="centre"):
                yield Timeline(id="timeline")
                yield Composer(id="composer", completer=self._complete)
            yield Static("", id="members", markup=False)
        yield StatusLine("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        composer = self.query_one(Composer)
        composer.cursor_blink = self.settings.cursor_blink
        composer.focus()
        self.query_one(Banner).display = False
        self.logs[NO_ROOM] = RoomLog(NO_ROOM, self.me, has_older=False, loaded=True)
        rooms = self.room_ids()
        self.switch_room(rooms[0] if rooms else NO_ROOM)
        self.show_status()
        self.set_interval(0.5, self._tick)
        if pending_changes(self.client):
            self.app.call_later(keydialog.warn_all, self)

    # --- helpers --------------------------------------------------------------
    def now_ms(self) -> int:
        return int(self.settings.clock() * 1000)

    def room_ids(self) -> list[str]:
        return [r.room for r in self.rows()]

    def label(self, room: str) -> str:
        """How `room` is named on screen: '#general', '@bob', or its alias."""
        return room_label(room, self.me, self.aliases)

    def rows(self) -> list[RoomRow]:
        return [
            RoomRow(
                room=r.room,
                label=self.label(r.room),
                unread=0
                if r.room == self.current
                else r.unread + len(self.peer_unread.get(r.room, ())),
                mentioned=r.room in self.mentions,
            )
            for r in self.client.rooms()
        ]

    def refresh_rooms(self) -> None:
        rows = self.rows()
        self.query_one(RoomList).set_rows(rows, self.current or None)
        members = self.query_one("#members", Static)
        if self.current:
            lines = [
                f"{'★' if m.admin else ' '} {visible(shown_name(m.user, self.aliases))}"
                f"{trust_mark(m.verified, m.key_changed)}"
                for m in self.client.member_details(self.current)
            ]
            members.update("Members\n" + "\n".join(lines))
        else:
            members.update("")

    def current_log(self) -> RoomLog:
        """The log of the room on screen."""
        return self.logs.setdefault(self.current, RoomLog(self.current, self.me))

    def redraw(self, anchor: Anchor = "follow") -> None:
        self.query_one(Timeline).show(self.current_log(), self.me, self.aliases, anchor=anchor)

    def soon(self, *what: str) -> None:
        """Mark the room on screen read, redraw it, refresh the room list
        (`what`), together with whatever else is due, within BURST_S."""
        if not self._due:
            self.set_timer(BURST_S, self._catch_up)
        self._due.update(what)

    def _catch_up(self) -> None:
        due, self._due = self._due, set()
        if "read" in due and self.current:
            self.client.mark_read(self.current)
        if "redraw" in due:
            timeline = self.query_one(Timeline)
            if timeline.following:
                history.back_to_newest(self)  # (a hold whose scroll raced a room switch)
                self.current_log().trim(KEPT_MESSAGES)
                self.redraw()
            else:
                # The user reads older messages: what came in is drawn when
                # they scroll back down (`on_following_again`), not redrawn
                # with the whole log every BURST_S while a flood goes on
                # (and past KEPT_MESSAGES more, left to the cache till then).
                timeline.mark_behind()
        for room in self.grown - {self.current}:  # rooms not on screen: their newest
            if (room_log := self.logs.get(room)) is not None:
                room_log.trim(KEPT_MESSAGES)
        self.grown.clear()
        if "rooms" in due:
            self.refresh_rooms()

    def notice(self, text: str, level: NoticeLevel = "info", *, reveal: bool = True) -> None:
        """A local line in the current room's timeline (not sent anywhere),
        brought into view if it answers something the user just did
        (`reveal`); else shown as a message would be."""
        self.current_log().notice(text, self.now_ms(), level)
        self.redraw(anchor="newest" if reveal else "follow")

    def error(self, text: str) -> None:
        # An error may echo what was typed (up to a whole pasted page): its start says enough.
        self.notice(text if len(text) <= 300 else text[:300] + "…", "error")

    def _complete(self, text: str) -> str:
        rooms = [room_label(r, self.me) for r in self.room_ids()]
        users = {u for r in self.room_ids() for u in self.client.members(r)}
        users |= {k for k in self.aliases if not k.startswith("#")}
        return cmds.complete(text, rooms, sorted(users - {self.me}) or sorted(users))

    # --- rooms ----------------------------------------------------------------
    def switch_room(self, room: str) -> None:
        if (left := self.logs.get(self.current)) is not None:
            left.release_newer()  # not on screen: it takes what comes in (trimmed)
        self.current = room
        self.query_one(Composer).room = room
        self.mentions.discard(room)
        self.peer_unread.pop(room, None)
        title = self.label(room) if room else "no room"
        self.sub_title = title
        self.query_one(Timeline).border_title = escape(title)  # a title is not markup
        if room:
            self.client.mark_read(room)
        else:
            nothing = self.logs[NO_ROOM]
            if not nothing.entries:
                nothing.notice(
                    "no rooms yet: /create ROOM [USER ...] or /dm USER; /help lists commands",
                    self.now_ms(),
                )
        self.refresh_rooms()
        self.redraw()
        if room and (not self.current_log().loaded or self.current_log().has_newer):
            history.load_room(self, room)

    def on_stopped_following(self, message: StoppedFollowing) -> None:
        message.stop()
        self.current_log().hold_newer(KEPT_MESSAGES)

    def on_following_again(self, message: FollowingAgain) -> None:
        message.stop()
        if not history.back_to_newest(self):
            self.soon("redraw")

    def on_older_wanted(self, message: OlderWanted) -> None:
        message.stop()
        history.load_older(self)

    def on_room_chosen(self, message: RoomChosen) -> None:
        message.stop()
        self.switch_room(message.room)
        self.query_one(Composer).focus()

    def _step_room(self, step: int) -> None:
        rooms = self.query_one(RoomList).rows
        if not rooms:
            return
        ids = [r.room for r in rooms]
        i = ids.index(self.current) if self.current in ids else -step
        self.switch_room(ids[(i + step) % len(ids)])

    def action_next_room(self) -> None:
        self._step_room(1)

    def action_prev_room(self) -> None:
        self._step_room(-1)

    def action_focus_rooms(self) -> None:
        self.query_one(RoomList).focus()

    def action_focus_input(self) -> None:
        self.query_one(Composer).focus()

    def action_older(self) -> None:
        self.query_one(Timeline).page_up()

    def action_newer(self) -> None:
        self.query_one(Timeline).scroll_page_down(animate=False)

    def action_help(self) -> None:
        for line in cmds.help_lines():
            self.current_log().notice(line, self.now_ms())
        self.redraw()

    def action_reconnect(self) -> None:
        """Cut a reconnect back-off short."""
        if self.client.status.state is ConnState.LIVE:
            self.notice("already connected")
            return
        self.notice("reconnecting now")
        self.client.retry_now()

    def action_review_keys(self) -> None:
        changes = pending_changes(self.client)
        if not changes:
            self.notice("no pending key changes")
        keydialog.warn_all(self)

    # --- status ---------------------------------------------------------------
    def show_status(self) -> None:
        status = self.client.status
        self.query_one(StatusLine).update(
            status_text(self.me, status, pending_changes(self.client), self.peers_reached)
        )
        self.query_one(Banner).show_status(status, self.settings.clock())

    def _tick(self) -> None:
        if self.client.status.state is not ConnState.LIVE:
            self.show_status()

    # --- engine events (engine_events.py) --------------------------------------
    def on_engine_event(self, message: EngineEvent) -> None:
        message.stop()
        engine_events.handle(self, message.event)

    # --- input ----------------------------------------------------------------
    def on_line_submitted(self, message: LineSubmitted) -> None:
        message.stop()
        text = message.text
        if cmds.is_command(text):
            self._run_command(text)
        elif message.room != self.current:  # the room changed under the Enter (a removal)
            self.error("the line was typed in another room: not sent (Up brings it back)")
        else:
            self.send(text[1:] if text.startswith("//") else text, typed=text)

    def send(self, text: str, room: str | None = None, *, typed: str = "") -> bool:
        """Queue `text` for `room` (default: this one; checked before anything
        is sealed: `check_text`) and show it as pending, in the same step as
        the Enter that sent it. False if it was refused (and said why); the
        line `typed` goes back into the input if the cache would not take it."""
        room = room or self.current
        if not room:
            self.error("no room selected: /create ROOM, /join ROOM or /dm USER first")
            return False
        try:
            txn = self.client.queue(room, text)
        except CurvechatError as exc:
            self.error(explain(exc, Attempt("send", room=room_label(room, self.me))))
            if isinstance(exc, CacheWriteFailed):
                self.query_one(Composer).give_back(typed or text)
            return False
        self.logs.setdefault(room, RoomLog(room, self.me)).add_pending(txn, text, self.now_ms())
        if room == self.current:
            self.redraw(anchor="newest")  # your own message comes into view
        return True

    @work(group="command")
    async def _run_command(self, line: str) -> None:
        attempt = Attempt(line.split(maxsplit=1)[0].lstrip("/"))
        try:
            inv = cmds.parse(line)
            target = inv.args[-1] if inv.args else ""
            if inv.spec.name != "create":
                target = target.lstrip("@")
            where = room_label(self.current, self.me) if self.current else ""
            attempt = Attempt(inv.spec.name, target, where)
            await slash.dispatch(self, inv)
        except cmds.CommandError as exc:
            self.error(str(exc))
        except KeyChanged as exc:
            self.error(explain(exc, attempt))
            await keydialog.ask(self, exc.user)
        except Exception as exc:  # a refusal or a bug: one sentence, never a traceback
            self.error(explain(exc, attempt))
