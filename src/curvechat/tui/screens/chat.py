"""The main screen: rooms on the left, the room's history in the centre, the
input line at the bottom, a status line and a connection banner.

It reacts to the engine's events (delivered as `EngineEvent` messages on the
app's loop) and runs the slash commands. Every error a user can cause ends as
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

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static

from curvechat.client import events as ev
from curvechat.client.errors import KeyChanged
from curvechat.client.state import ConnState
from curvechat.protocol.errors import CurvechatError
from curvechat.protocol.text import visible
from curvechat.tui import commands as cmds
from curvechat.tui.errors import Attempt, explain, explain_code
from curvechat.tui.format import room_label
from curvechat.tui.keys import accept_key, key_view, pending_changes, trust_mark
from curvechat.tui.messages import EngineEvent, LineSubmitted, OlderWanted, RoomChosen
from curvechat.tui.screens import familiar
from curvechat.tui.settings import ChatSettings, load_aliases
from curvechat.tui.widgets.composer import Composer
from curvechat.tui.widgets.rooms import RoomList, RoomRow
from curvechat.tui.widgets.status import Banner, StatusLine, banner_text, status_text
from curvechat.tui.widgets.timeline import Anchor, NoticeLevel, RoomLog, Timeline

NO_ROOM = ""
BANNER_SECONDS = 10.0


if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient


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
        self.aliases = load_aliases(settings.home)
        self.was_lost = False
        self.peers_reached = 0
        """Members reached peer to peer while the server is unreachable."""
        self.connected_once = False
        self._banner_timer: Timer | None = None
        self._key_dialogs: set[str] = set()
        self._mention_re = re.compile(rf"(?<![\w@.-])@?{re.escape(self.me)}(?![\w-])")

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
        self.logs[NO_ROOM] = RoomLog(NO_ROOM, has_older=False, loaded=True)
        rooms = self.room_ids()
        self.switch_room(rooms[0] if rooms else NO_ROOM)
        self._show_status()
        self.set_interval(0.5, self._tick)
        if pending_changes(self.client):
            self.app.call_later(self._warn_key_changes)

    # --- helpers --------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.settings.clock() * 1000)

    def room_ids(self) -> list[str]:
        return [r.room for r in self._rows()]

    def label(self, room: str) -> str:
        """How `room` is named on screen: '#general', '@bob', or its alias."""
        return room_label(room, self.me, self.aliases)

    def _rows(self) -> list[RoomRow]:
        return [
            RoomRow(
                room=r.room,
                label=self.label(r.room),
                unread=0 if r.room == self.current else r.unread,
                mentioned=r.room in self.mentions,
            )
            for r in self.client.rooms()
        ]

    def refresh_rooms(self) -> None:
        rows = self._rows()
        self.query_one(RoomList).set_rows(rows, self.current or None)
        members = self.query_one("#members", Static)
        if self.current:
            lines = [
                f"{'★' if m.admin else ' '} {visible(self.aliases.get(m.user, m.user))}"
                f"{trust_mark(m.verified, m.key_changed)}"
                for m in self.client.member_details(self.current)
            ]
            members.update("Members\n" + "\n".join(lines))
        else:
            members.update("")

    def _log(self) -> RoomLog:
        return self.logs.setdefault(self.current, RoomLog(self.current))

    def _redraw(self, anchor: Anchor = "follow") -> None:
        self.query_one(Timeline).show(self._log(), self.me, self.aliases, anchor=anchor)

    def notice(self, text: str, level: NoticeLevel = "info", *, reveal: bool = True) -> None:
        """A local line in the current room's timeline (not sent anywhere),
        brought into view if it answers something the user just did
        (`reveal`); else shown as a message would be."""
        self._log().notice(text, self._now_ms(), level)
        self._redraw(anchor="newest" if reveal else "follow")

    def error(self, text: str) -> None:
        self.notice(text, "error")

    def _complete(self, text: str) -> str:
        rooms = [room_label(r, self.me) for r in self.room_ids()]
        users = {u for r in self.room_ids() for u in self.client.members(r)}
        users |= {k for k in self.aliases if not k.startswith("#")}
        return cmds.complete(text, rooms, sorted(users - {self.me}) or sorted(users))

    # --- rooms ----------------------------------------------------------------
    def switch_room(self, room: str) -> None:
        self.current = room
        self.mentions.discard(room)
        title = self.label(room) if room else "no room"
        self.sub_title = title
        self.query_one(Timeline).border_title = title
        if room:
            self.client.mark_read(room)
        else:
            nothing = self.logs[NO_ROOM]
            if not nothing.entries:
                nothing.notice(
                    "no rooms yet: /create ROOM [USER ...] or /dm USER; /help lists commands",
                    self._now_ms(),
                )
        self.refresh_rooms()
        self._redraw()
        if room and not self._log().loaded:
            self._load_room(room)

    @work(group="load")
    async def _load_room(self, room: str) -> None:
        """The newest page of `room`, merged with whatever came in (or was
        sent) while it loaded. Its own worker group: loading an older page
        (an exclusive worker) must never cancel it, or the room would stay
        unloaded and ignore every later message."""
        room_log = self.logs.setdefault(room, RoomLog(room))
        failed = False
        try:
            msgs = await self.client.history(room, limit=self.settings.page_size)
        except CurvechatError as exc:
            msgs, failed = [], True
            if room == self.current:
                self.error(explain(exc, Attempt("history", room=room_label(room, self.me))))
        for msg in msgs:
            room_log.add_message(msg)
        shown = {e.txn for e in room_log.entries}
        for item in self.client.pending(room):
            if item.txn not in shown:
                room_log.add_pending(item.txn, item.text, item.created_ms)
        first = room_log.first_seq
        room_log.has_older = failed or (first is not None and first > 1)
        room_log.loaded = True
        if room == self.current:
            self._redraw()

    def on_older_wanted(self, message: OlderWanted) -> None:
        message.stop()
        self._load_older()

    @work(group="older", exclusive=True)
    async def _load_older(self) -> None:
        room = self.current
        room_log = self.logs.get(room)
        timeline = self.query_one(Timeline)
        if not room or room_log is None or not room_log.loaded or not room_log.has_older:
            return
        timeline.loading_older = True
        try:
            msgs = await self.client.history(
                room, limit=self.settings.page_size, before=room_log.first_seq
            )
        except CurvechatError as exc:
            self.error(explain(exc, Attempt("history", room=room_label(room, self.me))))
            return
        finally:
            timeline.loading_older = False
        added = room_log.prepend(msgs)
        first = room_log.first_seq
        room_log.has_older = bool(added) and first is not None and first > 1
        if room == self.current:
            self._redraw(anchor="keep")

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
            self._log().notice(line, self._now_ms())
        self._redraw()

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
        self._warn_key_changes()

    # --- status ---------------------------------------------------------------
    def _show_status(self) -> None:
        status = self.client.status
        self.query_one(StatusLine).update(
            status_text(self.me, status, pending_changes(self.client), self.peers_reached)
        )
        banner = self.query_one(Banner)
        text = banner_text(status, self.settings.clock())
        if text is not None:
            if self._banner_timer is not None:
                self._banner_timer.stop()
                self._banner_timer = None
            banner.update(text)
            banner.set_class(status.state is ConnState.RECONNECTING, "-lost")
            banner.set_class(False, "-back")
            banner.display = True
        elif self.was_lost and banner.display and banner.has_class("-lost"):
            banner.update(f"connection is back ({status.endpoint}); catching up…")
            banner.set_class(False, "-lost")

    def _tick(self) -> None:
        if self.client.status.state is not ConnState.LIVE:
            self._show_status()

    def _caught_up(self, count: int) -> None:
        banner = self.query_one(Banner)
        noun = "message" if count == 1 else "messages"
        if self.was_lost:
            text = f"✓ reconnected to {self.client.status.endpoint} · caught up {count} {noun}"
        else:
            text = f"✓ connected to {self.client.status.endpoint} · caught up {count} {noun}"
        self.was_lost = False
        banner.update(text)
        banner.set_class(False, "-lost")
        banner.set_class(True, "-back")
        banner.display = True
        if self._banner_timer is not None:
            self._banner_timer.stop()
        self._banner_timer = self.set_timer(BANNER_SECONDS, self._hide_banner)

    def _hide_banner(self) -> None:
        if self.client.status.state is ConnState.LIVE:
            self.query_one(Banner).display = False

    # --- engine events ----------------------------------------------------------------------------
    def on_engine_event(self, message: EngineEvent) -> None:
        message.stop()
        event = message.event
        if isinstance(event, ev.StatusChanged):
            if event.status.state is ConnState.RECONNECTING:
                self.was_lost = True
            self._show_status()
        elif isinstance(event, ev.MessageReceived):
            self._message_in(event)
        elif isinstance(event, ev.SendAcked):
            room_log = self.logs.get(event.room)
            placed = room_log is not None and room_log.acked(
                event.txn, event.seq, event.ts_ms, self.me
            )
            if placed and event.room == self.current:
                self._redraw()
        elif isinstance(event, ev.SendFailed):
            room_log = self.logs.get(event.room)
            if room_log is not None:
                attempt = Attempt("send", room=room_label(event.room, self.me))
                room_log.fail(event.txn, explain_code(event.code, event.message, attempt))
                if event.room == self.current:
                    self._redraw()
        elif isinstance(event, ev.CaughtUp):
            self._on_caught_up(event.messages)
        elif isinstance(event, ev.RoomUpdated):
            self._on_room_updated(event)
        elif isinstance(event, ev.Problem):
            if event.room in (None, self.current):
                self.notice(event.message, "warning", reveal=False)
        elif isinstance(event, ev.PeerStatus):
            if event.active and event.peers and not self.peers_reached:
                self.notice(
                    "server unreachable: your messages go peer to peer to the members you can "
                    "reach; invites, removals and new keys wait for the server",
                    reveal=False,
                )
            self.peers_reached = event.peers if event.active else 0
            self._show_status()
        elif isinstance(event, ev.PeerMessage):
            room_log = self.logs.get(event.room)
            if room_log is not None:
                room_log.add_pending(event.txn, event.text, event.sent_ms, sender=event.sender)
                if event.room == self.current:
                    self._redraw()
        elif isinstance(event, ev.KeyChangeDetected):
            self._show_status()
            self.app.call_later(self._key_change_dialog, event.user)

    def _message_in(self, event: ev.MessageReceived) -> None:
        msg = event.message
        room_log = self.logs.get(msg.room)
        if room_log is not None:
            # also while its history loads: the load merges by seq, and this
            # may be the message that ends one of our pending entries
            room_log.add_message(msg)
        if msg.room == self.current:
            self.client.mark_read(msg.room)
            self._redraw()
        elif not event.mine and msg.text and self._mention_re.search(msg.text):
            self.mentions.add(msg.room)
        self.refresh_rooms()

    def _on_caught_up(self, count: int) -> None:
        if not self.connected_once:
            self.connected_once = True
            app = self.app
            if hasattr(app, "on_first_connect"):
                app.on_first_connect()
        self._caught_up(count)
        self._show_status()
        if not self.current:
            rooms = self.room_ids()
            if rooms:
                self.switch_room(rooms[0])
        self.refresh_rooms()

    def _on_room_updated(self, event: ev.RoomUpdated) -> None:
        gone = event.reason in ("removed", "left")
        label = room_label(event.room, self.me)
        if gone and event.room == self.current:
            self.notice(
                f"you left {label}" if event.reason == "left" else f"you were removed from {label}",
                "warning",
            )
            self.logs.pop(event.room, None)
            rooms = [r for r in self.room_ids() if r != event.room]
            self.switch_room(rooms[0] if rooms else NO_ROOM)
        elif not gone and not self.current and event.room in self.room_ids():
            self.switch_room(event.room)
        elif event.reason in ("added", "created") and event.room != self.current:
            self._log().notice(f"you are now in {label}", self._now_ms())
            self._redraw()
        self.refresh_rooms()

    # --- keys -----------------------------------------------------------------
    def _warn_key_changes(self) -> None:
        for user in pending_changes(self.client):
            self.app.call_later(self._key_change_dialog, user)

    async def _key_change_dialog(self, user: str) -> None:
        from curvechat.tui.screens.keychange import KeyChangeScreen

        if user in self._key_dialogs or user not in pending_changes(self.client):
            return
        self._key_dialogs.add(user)
        view = await key_view(self.client, user)
        self.notice(
            f"⚠ the identity key of {user} changed; nothing is sent to them until you accept it",
            "error",
        )

        async def done(accepted: bool | None) -> None:
            self._key_dialogs.discard(user)
            if accepted:
                await self._accept(user)
            else:
                self.notice(f"key change of {user} not accepted; /keys accept {user} when ready")

        await self.app.push_screen(KeyChangeScreen(view), done)

    async def _accept(self, user: str) -> None:
        if await accept_key(self.client, user):
            self.notice(f"accepted the new key of {user}")
        else:
            self.error(f"/keys: no key change is pending for {user}")
        self._show_status()

    # --- input ----------------------------------------------------------------
    def on_line_submitted(self, message: LineSubmitted) -> None:
        message.stop()
        text = message.text
        if cmds.is_command(text):
            self._run_command(text)
        else:
            self.send(text[1:] if text.startswith("//") else text)

    def send(self, text: str, room: str | None = None) -> bool:
        """Queue `text` for `room` (default: this one; checked before anything
        is sealed: `check_text`) and show it as pending, in the same step as
        the Enter that sent it. False if it was refused (and said why)."""
        room = room or self.current
        if not room:
            self.error("no room selected: /create ROOM, /join ROOM or /dm USER first")
            return False
        try:
            txn = self.client.queue(room, text)
        except CurvechatError as exc:
            self.error(explain(exc, Attempt("send", room=room_label(room, self.me))))
            return False
        self.logs.setdefault(room, RoomLog(room)).add_pending(txn, text, self._now_ms())
        if room == self.current:
            self._redraw(anchor="newest")  # your own message comes into view
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
            await self._dispatch(inv)
        except cmds.CommandError as exc:
            self.error(str(exc))
        except KeyChanged as exc:
            self.error(explain(exc, attempt))
            await self._key_change_dialog(exc.user)
        except Exception as exc:  # a refusal or a bug: one sentence, never a traceback
            self.error(explain(exc, attempt))

    def _need_room(self, inv: cmds.Invocation) -> str:
        if not self.current:
            raise cmds.CommandError(f"/{inv.name}: no room selected; /join ROOM first")
        return self.current

    async def _dispatch(self, inv: cmds.Invocation) -> None:
        c = self.client
        name, args = inv.spec.name, inv.args
        if name == "help":
            lines = cmds.help_lines(args[0] if args else None)
            for line in lines:
                self._log().notice(line, self._now_ms())
            self._redraw()
        elif name == "quit":
            self.app.call_later(self.app.action_quit)
        elif await familiar.dispatch(self, inv):  # /join /switch /g /msg /a /nick
            pass
        elif name == "create":
            members = inv.rest.replace(",", " ").split()
            await c.create_room(args[0].lstrip("#"), members)
            self.switch_room(args[0].lstrip("#"))
            self.notice(f"created #{args[0].lstrip('#')} with {', '.join([self.me, *members])}")
        elif name == "invite":
            room = self._need_room(inv)
            result = await c.invite(room, args[0])
            self.notice(f"added {args[0]} to {room_label(room, self.me)}")
            if not result.verified:
                self.notice(
                    f"⚠ the key of {args[0]} is unverified (first seen through the server):"
                    f" compare safety number {result.safety_number} with them, then"
                    f" /keys verify {args[0]}",
                    "error",
                )
            if not result.shared_history:
                self.notice(f"{args[0]} gets no earlier messages (history: verified members only)")
        elif name == "remove":
            room = self._need_room(inv)
            if args[0] == self.me:
                raise cmds.CommandError("/remove: to remove yourself, /leave")
            await c.remove(room, args[0])
            self.notice(f"removed {args[0]} from {room_label(room, self.me)}; the room key rotated")
        elif name == "leave":
            room = self._need_room(inv)
            await c.leave(room)
        elif name == "dm":
            user = args[0].lstrip("@")
            if user == self.me:
                raise cmds.CommandError("/dm: that is you; pick someone else")
            room = await c.open_dm(user)
            self.refresh_rooms()
            self.switch_room(room)
            if inv.rest.strip():
                self.send(inv.rest)
        elif name == "rooms":
            rows = self._rows()
            if not rows:
                self.notice("no rooms yet")
            for r in rows:
                count = len(c.members(r.room))
                extra = f", {r.unread} unread" if r.unread else ""
                self._log().notice(f"{r.label}: {count} members{extra}", self._now_ms())
            self._redraw()
        elif name == "members":
            room = self._need_room(inv)
            people = [
                f"{self.aliases.get(m.user, m.user)}{' (admin)' if m.admin else ''}"
                f"{trust_mark(m.verified, m.key_changed)}"
                for m in c.member_details(room)
            ]
            self.notice(f"members of {room_label(room, self.me)}: {', '.join(people)}")
        elif name == "whois":
            await self._whois(args[0].lstrip("@"))
        elif name == "keys":
            await self._keys(inv)

    async def _whois(self, user: str) -> None:
        if user != self.me:
            await self.client.lookup([user])  # the directory's key, checked against the pin
        view = await key_view(self.client, user)
        alias = f" (shown as {self.aliases[user]})" if user in self.aliases else ""
        self.notice(f"{user}{alias}: fingerprint {view.fingerprint}")
        if view.safety_number:
            self.notice(f"safety number with {user}: {view.safety_number}")
        if view.changed:
            self.notice(f"⚠ {user} offers a NEW key {view.offered_fingerprint}", "error")

    async def _keys(self, inv: cmds.Invocation) -> None:
        args = inv.args
        if args and args[0] == "accept":
            if len(args) < 2:
                raise cmds.CommandError("/keys accept: missing USER; usage: /keys accept USER")
            await self._accept(args[1].lstrip("@"))
            return
        if args and args[0] == "verify":
            if len(args) < 2:
                raise cmds.CommandError("/keys verify: missing USER; usage: /keys verify USER")
            if args[1].lstrip("@") == self.me:
                raise cmds.CommandError("/keys verify: your own key needs no verifying")
            info = self.client.verify_key(args[1].lstrip("@"))
            self.notice(f"the key of {info.user} is now marked verified ({info.fingerprint})")
            self.refresh_rooms()
            return
        if len(args) > 1:
            raise cmds.CommandError("/keys: too many arguments; usage: " + inv.spec.usage)
        if not args:
            mine = await key_view(self.client, self.me)
            self.notice(f"your fingerprint ({self.me}): {mine.fingerprint}")
            changes = pending_changes(self.client)
            if changes:
                self.notice(f"⚠ key changes waiting: {', '.join(changes)}", "error")
            else:
                self.notice("no pending key changes; /keys USER shows a safety number")
            return
        user = args[0].lstrip("@")
        view = await key_view(self.client, user)
        if view.fingerprint is None:
            raise cmds.CommandError(f"/keys: no key known for {user}; try /whois {user}")
        state = "verified" if view.verified else "unverified"
        self.notice(f"{user}: fingerprint {view.fingerprint} ({state})")
        if view.safety_number:
            self.notice(f"safety number with {user}: {view.safety_number}")
        if not view.verified and user != self.me:
            self.notice(f"after comparing it with {user}: /keys verify {user}")
        if view.changed:
            self.notice(
                f"⚠ {user} offers a NEW key {view.offered_fingerprint}; after checking the new "
                f"safety number {view.offered_safety_number}: /keys accept {user}",
                "error",
            )
