"""The key-change warning: a modal that cannot be missed.

A peer's identity key differs from the one pinned. Nothing is encrypted to
them until the user accepts the new key, which they should do only after
comparing the safety number over another channel.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from curvechat.tui.keys import KeyView


class KeyChangeScreen(ModalScreen[bool]):
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

    def compose(self) -> ComposeResult:
        v = self.view
        with Vertical(id="keychange-box"):
            yield Label(f"⚠ THE IDENTITY KEY OF {v.user.upper()} HAS CHANGED", id="keychange-title")
            yield Static(
                f"pinned key:  {v.fingerprint or '-'}\n"
                f"offered key: {v.offered_fingerprint or '-'}\n"
                f"new safety number:\n  {v.offered_safety_number or '-'}\n\n"
                f"Nothing will be sent to {v.user} until you accept the new key. "
                "Someone may be impersonating them, or they set up a new device: "
                "compare the safety number with them over another channel first.",
                id="keychange-body",
            )
            with Horizontal(id="keychange-buttons"):
                accept = Button("Accept new key (ctrl+a)", id="keychange-accept", variant="error")
                accept.can_focus = False
                yield accept
                yield Button("Not now (esc)", id="keychange-later")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "keychange-accept")

    def action_accept(self) -> None:
        self.dismiss(True)

    def action_later(self) -> None:
        self.dismiss(False)
