"""The Textual app: first-run setup, then the chat screen over one engine.

`make_app` is the one way to build it, for the CLI (`curvechat chat`) and the
tests alike. The app owns the `ChatClient` it creates (and closes it on quit);
a client passed in (tests, demos) stays the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import App
from textual.binding import Binding, BindingType

from curvechat.client import events as ev
from curvechat.protocol.errors import ConfigError
from curvechat.protocol.text import visible
from curvechat.tui.errors import LOG_NAME
from curvechat.tui.messages import EngineEvent
from curvechat.tui.screens.chat import ChatScreen
from curvechat.tui.settings import ChatSettings

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient
    from curvechat.client.home import Home
    from curvechat.crypto.identity import Identity
    from curvechat.protocol.connect import ServerAddress

log = logging.getLogger("curvechat.tui")

REGISTER_WAIT_S = 3.0  # a first run waits this long for a node's welcome
REGISTER_TIMEOUT_S = 15.0  # and this long for its answer to `register`


class CurvechatApp(App[int]):
    CSS_PATH = "curvechat.tcss"
    TITLE = "curvechat"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True)
    ]

    def __init__(self, settings: ChatSettings, *, client: ChatClient | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.client: ChatClient | None = client
        self._owns_client = client is None
        self._closed = False
        self._bug: BaseException | None = None  # what reached Textual (`_handle_exception`)
        self._server: str | None = None
        self.chat: ChatScreen | None = None

    def on_mount(self) -> None:
        if self.settings.keymap:
            self.set_keymap(dict(self.settings.keymap))
        if self.client is not None:
            self.call_later(self._open_chat, self.client)
        else:
            self._setup()

    # --- first run --------------------------------------------------------------------
    @work(group="setup", exclusive=True)
    async def _setup(self) -> None:
        from curvechat.client.errors import ClientError
        from curvechat.client.home import Home
        from curvechat.client.open import open_client
        from curvechat.crypto.errors import KeyFileError, WrongPassphrase
        from curvechat.crypto.identity import Identity
        from curvechat.crypto.keyfile import load_identity
        from curvechat.protocol.connect import ConnectStringError, parse_connect
        from curvechat.tui.screens.setup import ConnectScreen, CreateIdentityScreen, UnlockScreen

        home = Home(self.settings.home)
        identity: Identity | None = None
        new_passphrase: bytes | None = None  # a first run: kept once registered
        error: str | None = None
        if not home.identity.exists():
            answer = await self.push_screen_wait(CreateIdentityScreen())
            if answer is None:
                self.exit(1)
                return
            name, new_passphrase = answer
            identity = Identity.generate(name)
        passphrase_given = self.settings.passphrase
        while identity is None:
            passphrase = passphrase_given
            passphrase_given = None
            if passphrase is None:
                passphrase = await self.push_screen_wait(UnlockScreen(str(home.identity), error))
                if passphrase is None:
                    self.exit(1)
                    return
            try:
                identity = await asyncio.to_thread(load_identity, home.identity, passphrase)
            except WrongPassphrase:
                error = "wrong passphrase"
            except KeyFileError as exc:
                error = str(exc)

        error = None
        try:
            server = self.settings.server or home.saved_server()
        except ConfigError as exc:  # the saved address cannot be read: asked for instead
            server, error = None, str(exc)
        while True:
            if server is None:
                server = await self.push_screen_wait(ConnectScreen(error))
                if server is None:
                    self.exit(1)
                    return
            try:
                addresses = parse_connect(server)
            except ConnectStringError as exc:
                error, server = str(exc), None
                continue
            if new_passphrase is None:
                break
            # A first run: the identity is written aside, and kept only once
            # the server took its name (or could not be asked): a name taken
            # or a wrong server key leaves nothing behind.
            refused = await self._enroll(home, identity, new_passphrase, addresses)
            if refused is None:
                break
            kind, error = refused
            if kind == "fatal":  # said where it stays: after the screen is gone
                self.exit(1, message=Text(f"curvechat: {visible(error)}"))
                return
            if kind == "server":
                server = None
                continue
            answer = await self.push_screen_wait(CreateIdentityScreen(error))
            if answer is None:
                self.exit(1)
                return
            name, new_passphrase = answer
            identity = Identity.generate(name)
            error = None
        try:
            client = open_client(
                home,
                identity,
                addresses,
                client_id="curvechat-tui",
                **{"peers": self.settings.peers, **self.settings.client_options},
            )
        except ClientError as exc:  # nothing to show without it: said after the screen is gone
            log.error("the client could not be opened: %s", exc)
            said = f"curvechat: error [{exc.code}]: {visible(str(exc))}"
            if exc.code == "bad_cache":
                said += "\n" + cache_advice(home.cache)
            self.exit(1, message=Text(said))
            return
        self.client = client
        self._server = server
        await self._open_chat(client)

    async def _enroll(
        self, home: Home, identity: Identity, passphrase: bytes, addresses: list[ServerAddress]
    ) -> tuple[str, str] | None:
        """A first run: seal `identity` into a file beside the home's
        identity, register it, and keep the file only then (or when no
        server answered: it registers on its first connection, as before).
        None: kept; else what to ask again ("server", "name"), or "fatal"
        (the home cannot take it), and why."""
        from curvechat.client.enroll import Progress, Unreachable, keep, keep_sent, register
        from curvechat.client.errors import ClientError, KeyMismatch, ServerRefused
        from curvechat.crypto.keyfile import Staging, sealed_identity
        from curvechat.protocol import ErrorCode

        created = Staging()
        try:
            created.mkdir(home.path)
            data = await asyncio.to_thread(sealed_identity, identity, passphrase)
            staged = created.stage(home.identity, data)
        except (OSError, ValueError, MemoryError) as exc:
            created.undo()
            return "fatal", f"cannot write your identity in {home.path}: {exc}"
        self.notify(f"registering {identity.user}…", timeout=5, markup=False)
        note = None  # why it is kept unconfirmed, if it is
        progress = Progress()
        try:
            if not await register(
                identity,
                addresses,
                wait=REGISTER_WAIT_S,
                timeout=REGISTER_TIMEOUT_S,
                client_id="curvechat-tui",
                progress=progress,
            ):
                note = (
                    f"the server did not confirm {identity.user}'s registration;"
                    " it is sent again on the first connection"
                )
        except KeyMismatch as exc:
            created.undo()
            return "server", str(exc)
        except ServerRefused as exc:
            created.undo()
            taken = exc.code in (ErrorCode.NAME_TAKEN, ErrorCode.KEY_TAKEN)
            return "name" if taken else "fatal", f"{exc.code}: {exc.message}"
        except (Unreachable, RuntimeError) as exc:
            note = f"not registered yet ({exc}); it is, on the first connection"
        except BaseException:
            if not progress.sent:
                created.undo()
            else:  # (quit once it was sent) the name may be bound to this key
                keep_sent(staged, home.identity)
            raise
        try:
            keep(staged, home.identity)
        except ClientError as exc:  # the staged file holds the key the name is bound to
            return "fatal", f"{exc}; {identity.user} is in {staged}: rename it to {home.identity}"
        if note is not None:
            self.notify(note, severity="warning", timeout=10, markup=False)
        return None

    async def _open_chat(self, client: ChatClient) -> None:
        screen = ChatScreen(client, self.settings)
        self.chat = screen

        def forward(event: ev.Event) -> None:
            screen.post_message(EngineEvent(event))

        client.subscribe(forward)
        await self.push_screen(screen)
        if self._owns_client:
            await client.start()

    def on_first_connect(self) -> None:
        """The first sync is done: remember the server in the home."""
        if self._server is not None:
            from curvechat.client.home import Home

            Home(self.settings.home).save_server(self._server)

    # --- leaving --------------------------------------------------------------
    def _handle_exception(self, error: Exception) -> None:
        """A bug reached Textual: logged with its traceback (`chat.log`),
        and the app ends with status 1 (Textual's own handling, then
        `_fatal_error` below)."""
        log.critical("the terminal client stopped on a bug", exc_info=error)
        self._bug = error
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        """One line on the terminal: Textual's own would print the traceback
        with the locals of every frame, where the text of a message or a
        passphrase may be."""
        self.bell()
        what = type(self._bug).__name__ if self._bug is not None else "an error"
        self.panic(Text(f"curvechat: stopped on a bug ({what}); the details are in {LOG_NAME}"))

    async def close_client(self) -> None:
        if self._closed or not self._owns_client or self.client is None:
            return
        self._closed = True
        await self.client.close()

    async def action_quit(self) -> None:
        await self.close_client()
        self.exit(0)

    async def on_unmount(self) -> None:
        await self.close_client()


def cache_advice(path: Path) -> str:
    """What to do about a cache file that cannot be opened."""
    return (
        f"Move {path} aside (rename it) and start curvechat again: your history comes back"
        " from the server, but messages still queued in that file's outbox are lost."
    )


def make_app(settings: ChatSettings, *, client: ChatClient | None = None) -> CurvechatApp:
    """The app for `settings`; with `client`, skip setup and show that engine."""
    return CurvechatApp(settings, client=client)
