"""The chat screen's key-change dialogs: one for each user whose identity
key changed, never two at once for the same user, and the acceptance that
ends one. `/keys accept USER` opens the dialog too: a key is accepted only
from the dialog that shows it, and what is accepted is the key shown.

What this module must never do: accept a key change the user did not
accept, accept another key than the one on screen, or send anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.client.errors import NotReady
from curvechat.client.keys import KeyInfo
from curvechat.tui.errors import Attempt, explain
from curvechat.tui.keys import accept_key, known_key_view, pending_changes

if TYPE_CHECKING:
    from curvechat.tui.screens.chat import ChatScreen
    from curvechat.tui.screens.keychange import KeyChangeScreen


def warn_all(screen: ChatScreen) -> None:
    """Open the dialog for every key change that waits."""
    for user in pending_changes(screen.client):
        screen.app.call_later(ask, screen, user)


async def ask(screen: ChatScreen, user: str) -> None:
    """Ask the user about `user`'s key change: the dialog shows the key
    offered now (as recorded in the cache). Asked again while it is open,
    the dialog is left as it is, unless another key is offered by now: then
    it shows that one, and a notice says the offer changed."""
    from curvechat.tui.screens.keychange import KeyChangeScreen

    if user in screen.key_dialogs:
        _show_current(screen, screen.key_dialogs[user])
        return
    if user not in pending_changes(screen.client):
        return
    view = known_key_view(screen.client, user)
    if view.offered is None:
        return
    dialog = KeyChangeScreen(view)
    screen.key_dialogs[user] = dialog
    screen.notice(
        f"⚠ the identity key of {user} changed; nothing is sent to them until you accept it",
        "error",
    )
    _tell_offer(screen, view)

    async def done(key: bytes | None) -> None:
        screen.key_dialogs.pop(user, None)
        if key is not None:
            await accept(screen, user, key)
        else:
            screen.notice(f"key change of {user} not accepted; /keys accept {user} when ready")

    await screen.app.push_screen(dialog, done)


def _tell_offer(screen: ChatScreen, view: KeyInfo) -> None:
    screen.notice(
        f"{view.user} offers the key {view.offered_fingerprint}; compare the new safety number "
        f"{view.offered_safety_number} with them before accepting it (Ctrl+A in the warning)"
    )


def _show_current(screen: ChatScreen, dialog: KeyChangeScreen) -> None:
    view = known_key_view(screen.client, dialog.view.user)
    if view.offered is None or view.offered == dialog.view.offered:
        return
    dialog.show(view)
    screen.notice(
        f"⚠ the key {view.user} offers changed while the warning was open; it shows the new "
        "one now: compare its safety number before accepting",
        "error",
    )
    _tell_offer(screen, view)


async def confirm(screen: ChatScreen, user: str) -> None:
    """`/keys accept USER`: show the key USER offers now in the dialog, which
    accepts it (never this command by itself)."""
    if user not in pending_changes(screen.client):
        screen.error(f"/keys: no key change is pending for {user}")
        return
    await ask(screen, user)


async def accept(screen: ChatScreen, user: str, key: bytes) -> None:
    """Accept `key`, the offered key of `user` the dialog showed, and say so.
    If another key is offered by now, nothing is accepted: the dialog opens
    again with the new one."""
    try:
        await accept_key(screen.client, user, key)
    except NotReady as exc:
        if exc.code == "no_key_change":
            screen.error(f"/keys: no key change is pending for {user}")
        else:
            screen.error(explain(exc, Attempt("keys", user)))
        if exc.code == "key_changed_again":
            await ask(screen, user)
    else:
        screen.notice(f"accepted the new key of {user}")
    screen.show_status()
