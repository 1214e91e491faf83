"""First run: create an identity, unlock it, say which server to use.

Each screen returns what the user typed (or None for Cancel/Escape); the app
checks it and asks again with a one-line reason when it is wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from curvechat.protocol.text import visible


class _Form(Screen[Any]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Quit", id="setup.cancel")]

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error = error

    def _error(self) -> Static:
        return Static(
            visible(self.error or ""), id="setup-error", classes="setup-error", markup=False
        )

    def action_cancel(self) -> None:
        self.dismiss(None)

    def fail(self, text: str) -> None:
        self.query_one("#setup-error", Static).update(visible(text))


class CreateIdentityScreen(_Form):
    """No identity in the home yet: a name and a passphrase (twice)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="setup-box"):
            yield Label("Welcome to curvechat", classes="setup-title")
            yield Static(
                "No identity here yet. Pick a user name (a-z first, then a-z 0-9 . _ -) "
                "and a passphrase that seals your key on this machine.",
                classes="setup-help",
            )
            yield Input(placeholder="user name", id="setup-name")
            yield Input(placeholder="passphrase", password=True, id="setup-pass")
            yield Input(placeholder="passphrase again", password=True, id="setup-pass2")
            yield self._error()
            yield Button("Create identity", id="setup-ok", variant="primary")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        order = ["setup-name", "setup-pass", "setup-pass2"]
        if event.input.id in order[:-1]:
            self.query_one(f"#{order[order.index(event.input.id) + 1]}", Input).focus()
        else:
            self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self._done()

    def _done(self) -> None:
        from curvechat.protocol.limits import is_user_name

        name = self.query_one("#setup-name", Input).value.strip()
        one = self.query_one("#setup-pass", Input).value
        two = self.query_one("#setup-pass2", Input).value
        if not is_user_name(name):
            self.fail(f"{name!r} is not a user name: a-z first, then a-z 0-9 . _ -, up to 32")
            self.query_one("#setup-name", Input).focus()
        elif not one:
            self.fail("the passphrase is empty")
            self.query_one("#setup-pass", Input).focus()
        elif one != two:
            self.fail("the passphrases differ")
            self.query_one("#setup-pass2", Input).value = ""
            self.query_one("#setup-pass2", Input).focus()
        else:
            self.dismiss((name, one.encode()))


class UnlockScreen(_Form):
    """An identity exists: its passphrase."""

    def __init__(self, where: str, error: str | None = None) -> None:
        super().__init__(error)
        self.where = where

    def compose(self) -> ComposeResult:
        with Vertical(classes="setup-box"):
            yield Label("Unlock your identity", classes="setup-title")
            yield Static(f"identity: {visible(self.where)}", classes="setup-help", markup=False)
            yield Input(placeholder="passphrase", password=True, id="setup-pass")
            yield self._error()
            yield Button("Unlock", id="setup-ok", variant="primary")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self._done()

    def _done(self) -> None:
        value = self.query_one("#setup-pass", Input).value
        if not value:
            self.fail("the passphrase is empty")
            return
        self.dismiss(value.encode())


class ConnectScreen(_Form):
    """No server known: the connect string `curvechat serve` printed."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="setup-box"):
            yield Label("Which server?", classes="setup-title")
            yield Static(
                "Paste the connect string that `curvechat serve` printed "
                "(endpoint and server key).",
                classes="setup-help",
            )
            yield Input(placeholder="connect string", id="setup-server")
            yield self._error()
            yield Button("Connect", id="setup-ok", variant="primary")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self._done()

    def _done(self) -> None:
        value = self.query_one("#setup-server", Input).value.strip()
        if not value:
            self.fail("the connect string is empty")
            return
        self.dismiss(value)
