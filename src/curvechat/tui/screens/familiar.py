"""The commands IRC and weechat users reach for, run on the chat screen:
`/join` (a room you are in, or a new one after asking), `/g ROOM TEXT` and
`/msg USER TEXT` (`/p`) that write elsewhere without leaving the room you
are in, and `/a` for aliases.

An alias is a display name of your own for a user or a room: shown instead
of the name on this machine only, kept in `aliases.json` in the client home,
never sent to anyone. A command that takes a user or a room also takes its
alias.

It must never create a room or a direct-message room the user did not say
yes to, and never send a message anywhere but where the command named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.client.sending import check_text
from curvechat.protocol.limits import is_room_id, is_user_name
from curvechat.protocol.text import visible
from curvechat.tui import commands as cmds
from curvechat.tui.format import ALIAS_MARK, resolve_room, room_label, unalias
from curvechat.tui.screens.confirm import ConfirmScreen
from curvechat.tui.settings import MAX_ALIAS, is_alias, save_aliases

if TYPE_CHECKING:
    from curvechat.tui.screens.chat import ChatScreen

"""Characters an alias may have."""


async def dispatch(screen: ChatScreen, inv: cmds.Invocation) -> bool:
    """Run `inv` if it is one of these commands; False if it is not."""
    name = inv.spec.name
    if name in ("join", "switch"):
        await join(screen, inv)
    elif name == "g":
        room = _member_room(screen, inv, inv.args[0])
        _send_elsewhere(screen, room, inv)
    elif name == "msg":
        user = _user(screen, inv, inv.args[0])
        check_text(inv.rest)  # refused before the room is made
        room = await screen.client.open_dm(user)
        screen.refresh_rooms()
        _send_elsewhere(screen, room, inv)
    elif name in ("a", "nick"):
        alias(screen, inv)
    else:
        return False
    return True


async def join(screen: ChatScreen, inv: cmds.Invocation) -> None:
    """Open a room you are in; with /join, offer to create one you are not
    in (or to open the direct-message room with a user)."""
    given = inv.args[0]
    target = unalias(given, screen.aliases)
    if not target.startswith(("#", "@")) and target != given:
        target = "@" + target  # an alias of a user
    room = resolve_room(target, screen.me, screen.room_ids())
    if room is not None:
        screen.switch_room(room)
        return
    if inv.spec.name == "switch":
        raise cmds.CommandError(
            f"/switch: you are not in {visible(given)}; /join {visible(given)} joins or creates it"
        )
    app = screen.app
    if target.startswith("@"):
        user = _user(screen, inv, target)
        question = f"You have no direct-message room with {user} yet. Open one?"
        if not await app.push_screen_wait(ConfirmScreen(question, "Open it")):
            screen.notice(f"no direct-message room opened with {user}")
            return
        room = await screen.client.open_dm(user)
        screen.refresh_rooms()
        screen.switch_room(room)
        return
    name = target.removeprefix("#")
    if not is_room_id(name):
        raise cmds.CommandError(
            f"/join: {visible(given)} can't be a room name: use a-z, 0-9, '.', '_' and '-'"
        )
    question = (
        f"You are not in #{name}. If someone invited you, it would be in your list already."
        f"\n\nCreate #{name}, with you as its admin?"
    )
    if not await app.push_screen_wait(ConfirmScreen(question, "Create it")):
        screen.notice(f"#{name} not created")
        return
    await screen.client.create_room(name, [])
    screen.switch_room(name)
    screen.notice(f"created #{name}; /invite USER adds members")


def alias(screen: ChatScreen, inv: cmds.Invocation) -> None:
    """/a NAME ALIAS sets, /a NAME clears, the alias of a user or a room."""
    name = inv.args[0]
    if name.startswith("#"):
        room = resolve_room(name, screen.me, screen.room_ids())
        if room is None:
            raise cmds.CommandError(f"/{inv.name}: you are not in {visible(name)}")
        key, shown = f"#{room}", room_label(room, screen.me)
    elif is_user_name(name.removeprefix("@")):
        key = shown = name.removeprefix("@")
    else:
        raise cmds.CommandError(
            f"/{inv.name}: {visible(name)} is neither a user name (bob) nor a room (#team)"
        )
    aliases = screen.aliases
    if len(inv.args) < 2:
        if aliases.pop(key, None) is None:
            raise cmds.CommandError(f"/{inv.name}: {shown} has no alias; usage: {inv.spec.usage}")
        screen.notice(f"{shown} is shown as {shown} again")
    else:
        new = inv.args[1]
        taken = {room_label(r, screen.me) for r in screen.room_ids()} | set(screen.room_ids())
        taken |= {u for r in screen.room_ids() for u in screen.client.members(r)}
        if not is_alias(new):
            raise cmds.CommandError(
                f"/{inv.name}: an alias is one word of at most {MAX_ALIAS} characters,"
                f" not starting with / # or @, without [ ] {ALIAS_MARK} or control characters"
            )
        if new in taken or any(v == new for k, v in aliases.items() if k != key):
            raise cmds.CommandError(
                f"/{inv.name}: {visible(new)} already names someone or something here"
            )
        aliases[key] = new
        screen.notice(
            f"{shown} is shown as {visible(new)}{ALIAS_MARK} on this machine (an alias: your"
            f" own display name, never sent to anyone; {ALIAS_MARK} marks every alias)"
        )
    save_aliases(screen.settings.home, aliases)
    screen.switch_room(screen.current)  # the titles and the timeline, with the alias


def _user(screen: ChatScreen, inv: cmds.Invocation, given: str) -> str:
    user = unalias(given, screen.aliases).removeprefix("@")
    if user.startswith("#"):
        raise cmds.CommandError(
            f"/{inv.name}: {visible(given)} is a room; /g ROOM TEXT writes there"
        )
    if not is_user_name(user):
        raise cmds.CommandError(f"/{inv.name}: {visible(given)} is not a user name")
    if user == screen.me:
        raise cmds.CommandError(f"/{inv.name}: that is you; pick someone else")
    return user


def _member_room(screen: ChatScreen, inv: cmds.Invocation, given: str) -> str:
    room = resolve_room(unalias(given, screen.aliases), screen.me, screen.room_ids())
    if room is None:
        raise cmds.CommandError(
            f"/{inv.name}: you are not in {visible(given)}; /join {visible(given)} first"
        )
    return room


def _send_elsewhere(screen: ChatScreen, room: str, inv: cmds.Invocation) -> None:
    """Queue the command's text for `room` and say so here, without leaving this room."""
    text = inv.rest
    if screen.send(text, room, typed=inv.line) and room != screen.current:
        label = screen.label(room)
        screen.notice(f"→ {label}: {visible(text)}  (/join {label} to follow it)")
