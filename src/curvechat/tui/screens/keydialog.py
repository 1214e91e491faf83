"""The chat screen's key-change dialogs: one for each user whose identity
key changed, never two at once for the same user, and the acceptance that
ends one (from the dialog or from `/keys accept`).

What this module must never do: accept a key change the user did not
accept, or send anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.tui.keys import accept_key, key_view, pending_changes

if TYPE_CHECKING:
    from curvechat.tui.screens.chat import ChatScreen


def warn_all(screen: ChatScreen) -> None:
    """Open the dialog for every key change that waits."""
    for user in pending_changes(screen.client):
        screen.app.call_later(ask, screen, user)


async def ask(screen: ChatScreen, user: str) -> None:
    """Ask the user about `user`'s key change (once while it is open)."""
    from curvechat.tui.screens.keychange import KeyChangeScreen

    if user in screen.key_dialogs or user not in pending_changes(screen.client):
        return
    screen.key_dialogs.add(user)
    view = await key_view(screen.client, user)
    screen.notice(
        f"⚠ the identity key of {user} changed; nothing is sent to them until you accept it",
        "error",
    )

    async def done(accepted: bool | None) -> None:
        screen.key_dialogs.discard(user)
        if accepted:
            await accept(screen, user)
        else:
            screen.notice(f"key change of {user} not accepted; /keys accept {user} when ready")

    await screen.app.push_screen(KeyChangeScreen(view), done)


async def accept(screen: ChatScreen, user: str) -> None:
    """Accept the pending key change of `user` and say so."""
    if await accept_key(screen.client, user):
        screen.notice(f"accepted the new key of {user}")
    else:
        screen.error(f"/keys: no key change is pending for {user}")
    screen.show_status()
