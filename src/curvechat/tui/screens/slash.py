"""The chat screen's own slash commands: /help, /quit, /create, /invite,
/remove, /leave, /dm, /rooms, /members, /whois, /keys, /contacts and /more (the IRC-style
ones are in familiar.py). `dispatch` runs a parsed command on the screen;
a refusal is raised (`cmds.CommandError`, or the engine's error) for the
screen to explain in one sentence.

What this module must never do: accept or verify a key the user did not
name, or send anything but what the command says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.client.engine import CONTACT_ACTIONS
from curvechat.client.sending import check_text
from curvechat.protocol.limits import is_user_name
from curvechat.protocol.text import visible
from curvechat.tui import commands as cmds
from curvechat.tui.fold import text_size
from curvechat.tui.format import clock_time, day_label, room_label, shown_name
from curvechat.tui.keys import key_view, pending_changes, trust_mark
from curvechat.tui.logview import is_folded
from curvechat.tui.screens import familiar, keydialog
from curvechat.tui.screens.reader import ReaderScreen

if TYPE_CHECKING:
    from curvechat.tui.screens.chat import ChatScreen


SHOWN_CONTACTS = 100
"""The most contacts `/contacts` names on screen (`curvechat contacts` prints them all)."""


def need_room(screen: ChatScreen, inv: cmds.Invocation) -> str:
    if not screen.current:
        raise cmds.CommandError(f"/{inv.name}: no room selected; /join ROOM first")
    return screen.current


async def dispatch(screen: ChatScreen, inv: cmds.Invocation) -> None:
    """Run `inv`, one of the commands this module or familiar.py knows."""
    c = screen.client
    name, args = inv.spec.name, inv.args
    if name == "help":
        lines = cmds.help_lines(args[0] if args else None)
        for line in lines:
            screen.current_log().notice(line, screen.now_ms())
        screen.redraw()
    elif name == "quit":
        screen.app.call_later(screen.app.action_quit)
    elif await familiar.dispatch(screen, inv):  # /join /switch /g /msg /a /nick
        pass
    elif name == "create":
        members = [u.lstrip("@") for u in inv.rest.replace(",", " ").split()]
        members = [u for u in dict.fromkeys(members) if u != screen.me]
        for user in members:
            if not is_user_name(user):
                raise cmds.CommandError(f"/create: {visible(user[:64])} is not a valid user name")
        await c.create_room(args[0].lstrip("#"), members)
        screen.switch_room(args[0].lstrip("#"))
        screen.notice(f"created #{args[0].lstrip('#')} with {', '.join([screen.me, *members])}")
    elif name == "invite":
        room = need_room(screen, inv)
        args = (args[0].lstrip("@"), *args[1:])
        result = await c.invite(room, args[0])
        screen.notice(f"added {args[0]} to {room_label(room, screen.me)}")
        if not result.verified:
            screen.notice(
                f"⚠ the key of {args[0]} is unverified (first seen through the server):"
                f" compare safety number {result.safety_number} with them, then"
                f" /keys verify {args[0]}",
                "error",
            )
        if not result.shared_history:
            screen.notice(f"{args[0]} gets no earlier messages (history: verified members only)")
    elif name == "remove":
        room = need_room(screen, inv)
        args = (args[0].lstrip("@"), *args[1:])
        if args[0] == screen.me:
            raise cmds.CommandError("/remove: to remove yourself, /leave")
        await c.remove(room, args[0])
        screen.notice(f"removed {args[0]} from {room_label(room, screen.me)}; the room key rotated")
    elif name == "leave":
        room = need_room(screen, inv)
        await c.leave(room)
    elif name == "dm":
        user = args[0].lstrip("@")
        if user == screen.me:
            raise cmds.CommandError("/dm: that is you; pick someone else")
        if inv.rest.strip():
            check_text(inv.rest)  # refused before the room is made
        room = await c.open_dm(user)
        screen.refresh_rooms()
        screen.switch_room(room)
        if inv.rest.strip():
            screen.send(inv.rest, typed=inv.line)
    elif name == "rooms":
        rows = screen.rows()
        if not rows:
            screen.notice("no rooms yet")
        for r in rows:
            count = len(c.members(r.room))
            extra = f", {r.unread} unread" if r.unread else ""
            screen.current_log().notice(f"{r.label}: {count} members{extra}", screen.now_ms())
        screen.redraw()
    elif name == "members":
        room = need_room(screen, inv)
        people = [
            f"{shown_name(m.user, screen.aliases)}{' (admin)' if m.admin else ''}"
            f"{trust_mark(m.verified, m.key_changed)}"
            for m in c.member_details(room)
        ]
        screen.notice(f"members of {room_label(room, screen.me)}: {', '.join(people)}")
    elif name == "whois":
        await whois(screen, args[0].lstrip("@"))
    elif name == "keys":
        await keys(screen, inv)
    elif name == "contacts":
        await contacts(screen, inv)
    elif name == "more":
        more(screen, args[0] if args else "1")


async def contacts(screen: ChatScreen, inv: cmds.Invocation) -> None:
    """Show the contact list, or change it as `inv` says."""
    action = inv.args[0].lower() if inv.args else None
    users = [u.lstrip("@") for u in inv.rest.replace(",", " ").split()]
    usage = f"usage: {inv.spec.usage}"
    if action is not None and action not in CONTACT_ACTIONS:
        raise cmds.CommandError(f"/contacts: no action {visible(action[:32])}; {usage}")
    if action in ("add", "remove") and not users:
        raise cmds.CommandError(f"/contacts {action}: missing USER; {usage}")
    if action in ("only", "anyone") and users:
        raise cmds.CommandError(f"/contacts {action}: too many arguments; {usage}")
    for user in users:
        if not is_user_name(user):
            raise cmds.CommandError(f"/contacts: {visible(user[:64])} is not a valid user name")
    got = await screen.client.contacts(action, users)
    who = "only your contacts" if got.only else "anyone"
    listed = ", ".join(got.users[:SHOWN_CONTACTS]) if got.users else "none"
    if len(got.users) > SHOWN_CONTACTS:
        listed += f" and {len(got.users) - SHOWN_CONTACTS:,} more"
    screen.notice(f"{who} may put you in a room; contacts ({len(got.users)}): {listed}")


def more(screen: ChatScreen, which: str) -> None:
    """Open the reader on the `which`-th newest folded message of the room."""
    if not (which.isascii() and which.isdigit()) or len(which) > 6 or int(which) < 1:
        raise cmds.CommandError("/more: N is a number from 1, the newest; usage: /more [N]")
    folded = [e for e in screen.current_log().ordered() if is_folded(e)]
    nth = int(which)
    if not folded:
        raise cmds.CommandError("/more: no folded message in this room")
    if nth > len(folded):
        raise cmds.CommandError(f"/more: this room shows {len(folded)} folded message(s)")
    e = folded[-nth]
    who = shown_name(e.sender or screen.me, screen.aliases)
    title = f"{day_label(e.ts_ms)} {clock_time(e.ts_ms)}  {who} · {text_size(e.text)}"
    screen.app.push_screen(ReaderScreen(title, e.text))


async def whois(screen: ChatScreen, user: str) -> None:
    if user != screen.me:
        await screen.client.lookup([user])  # the directory's key, checked against the pin
    view = await key_view(screen.client, user)
    alias = f" (shown as {shown_name(user, screen.aliases)})" if user in screen.aliases else ""
    screen.notice(f"{user}{alias}: fingerprint {view.fingerprint}")
    if view.safety_number:
        screen.notice(f"safety number with {user}: {view.safety_number}")
    if view.changed:
        screen.notice(f"⚠ {user} offers a NEW key {view.offered_fingerprint}", "error")


async def keys(screen: ChatScreen, inv: cmds.Invocation) -> None:
    args = inv.args
    if args and args[0] == "accept":
        if len(args) < 2:
            raise cmds.CommandError("/keys accept: missing USER; usage: /keys accept USER")
        await keydialog.confirm(screen, args[1].lstrip("@"))
        return
    if args and args[0] == "verify":
        if len(args) < 2:
            raise cmds.CommandError("/keys verify: missing USER; usage: /keys verify USER")
        if args[1].lstrip("@") == screen.me:
            raise cmds.CommandError("/keys verify: your own key needs no verifying")
        info = screen.client.verify_key(args[1].lstrip("@"))
        screen.notice(f"the key of {info.user} is now marked verified ({info.fingerprint})")
        screen.refresh_rooms()
        return
    if len(args) > 1:
        raise cmds.CommandError("/keys: too many arguments; usage: " + inv.spec.usage)
    if not args:
        mine = await key_view(screen.client, screen.me)
        screen.notice(f"your fingerprint ({screen.me}): {mine.fingerprint}")
        changes = pending_changes(screen.client)
        if changes:
            screen.notice(f"⚠ key changes waiting: {', '.join(changes)}", "error")
        else:
            screen.notice("no pending key changes; /keys USER shows a safety number")
        return
    user = args[0].lstrip("@")
    view = await key_view(screen.client, user)
    if view.fingerprint is None:
        raise cmds.CommandError(f"/keys: no key known for {user}; try /whois {user}")
    state = "verified" if view.verified else "unverified"
    screen.notice(f"{user}: fingerprint {view.fingerprint} ({state})")
    if view.safety_number:
        screen.notice(f"safety number with {user}: {view.safety_number}")
    if not view.verified and user != screen.me:
        screen.notice(f"after comparing it with {user}: /keys verify {user}")
    if view.changed:
        screen.notice(
            f"⚠ {user} offers a NEW key {view.offered_fingerprint}; after checking the new "
            f"safety number {view.offered_safety_number}: /keys accept {user}",
            "error",
        )
