"""The key-change warning: a modal that cannot be missed.

A peer's identity key differs from the one pinned. Nothing is encrypted to
them until the user accepts the new key, which they should do only after
comparing the safety number over another channel. Accepting answers the
offered key the dialog shows, so that only that key can be pinned; when
another one is offered while it is open, `show` puts that one in its place.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from curvechat.tui.keys import KeyView


def body(v: KeyView, *, changed_meanwhile: bool = False) -> str:
    again = (
        "⚠ The offered key changed while this warning was open: this is the new one.\n\n"
        if changed_meanwhile
        else ""
    )
    return (
        f"{again}"
        f"pinned key:  {v.fingerprint or '-'}\n"
        f"offered key: {v.offered_fingerprint or '-'}\n"
        f"new safety number:\n  {v.offered_safety_number or '-'}\n\n"
        f"Nothing will be sent to {v.user} until you accept the new key. "
        "Someone may be impersonating them, or they set up a new device: "
        "compare the safety number with them over another channel first."
    )


class KeyChangeScreen(ModalScreen[bytes | None]):
    """Dismissed with the offered key it shows when the user accepts it,
    with None when they put it off."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+a", "accept", "Accept new key", id="keychange.accept"),
        Binding("escape", "later", "Not now", id="keychange.later"),
    ]

    # A key is accepted only on purpose (ctrl+a, or a click): the Enter that
    # ends a line typed while the dialog opens must not do it.
    AUTO_FOCUS = "#keychange-later"

    def __init__(self, view: KeyView) -> None:
        super().__init__()
        self.view = view
        self.changed_meanwhile = False

    def compose(self) -> ComposeResult:
        v = self.view
        with Vertical(id="keychange-box"):
            yield Label(f"⚠ THE IDENTITY KEY OF {v.user.upper()} HAS CHANGED", id="keychange-title")
            yield Static(body(v, changed_meanwhile=self.changed_meanwhile), id="keychange-body")
            with Horizontal(id="keychange-buttons"):
                accept = Button("Accept new key (ctrl+a)", id="keychange-accept", variant="error")
                accept.can_focus = False
                yield accept
                yield Button("Not now (esc)", id="keychange-later")

    def show(self, view: KeyView) -> None:
        """Show `view` instead: another key is offered now. Accepting then
        accepts that one."""
        self.view = view
        self.changed_meanwhile = True
        if self.is_mounted:
            self.query_one("#keychange-body", Static).update(body(view, changed_meanwhile=True))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "keychange-accept":
            self.action_accept()
        else:
            self.action_later()

    def action_accept(self) -> None:
        self.dismiss(self.view.offered)

    def action_later(self) -> None:
        self.dismiss(None)
