"""First run in the app: no identity (create one), no server (ask for the
connect string), then chat; and the real `curvechat chat` in tmux."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from curvechat.client.home import Home
from curvechat.tui.app import CurvechatApp
from curvechat.tui.screens.setup import ConnectScreen, CreateIdentityScreen, UnlockScreen
from curvechat.tui.settings import ChatSettings

from .conftest import PASSPHRASE, ready, until
from support.clients import FAST
from support.servers import ServerProcess


async def test_first_run_creates_identity_and_asks_for_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "newcomer"
    app = CurvechatApp(ChatSettings(home=home, client_options=FAST, cursor_blink=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CreateIdentityScreen), "create form")
        screen = app.screen
        screen.query_one("#setup-name", Input).value = "dora"
        screen.query_one("#setup-pass", Input).value = "one passphrase"
        screen.query_one("#setup-pass2", Input).value = "another"
        await pilot.click("#setup-ok")
        error = screen.query_one("#setup-error", Static)
        await until(pilot, lambda: "the passphrases differ" in str(error.render()), "mismatch")
        screen.query_one("#setup-pass2", Input).value = "one passphrase"
        await pilot.click("#setup-ok")

        await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect form")
        screen = app.screen
        await pilot.pause()  # laid out: the button has its place to be clicked at
        screen.query_one("#setup-server", Input).value = "not a connect string"
        await pilot.click("#setup-ok")
        await until(
            pilot,
            lambda: isinstance(app.screen, ConnectScreen) and app.screen is not screen,
            "asked again",
        )
        await until(
            pilot, lambda: str(app.screen.query_one("#setup-error", Static).render()), "why"
        )
        app.screen.query_one("#setup-server", Input).value = server.connect
        await pilot.click("#setup-ok")
        await until(pilot, lambda: app.chat is not None, "chat screen")
        assert app.client.me == "dora"
        await until(pilot, lambda: Home(home).saved_server() == server.connect, "server saved")
        # the server's fingerprint, to compare with what `serve` printed
        from curvechat.protocol.connect import parse_connect

        fingerprint = parse_connect(server.connect)[0].fingerprint
        log = app.chat.current_log()
        await until(
            pilot, lambda: any(fingerprint in str(e) for e in log.entries), "fingerprint shown"
        )
    assert Home(home).identity.exists()
    assert Home(home).identity.stat().st_mode & 0o077 == 0


async def test_a_taken_name_or_a_wrong_server_key_keeps_nothing_and_asks_again(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The first run registers the name before it keeps the identity: a name
    taken, or a connect string whose key is not the server's, asks again
    with the reason, and the home holds no identity meanwhile."""
    from curvechat.client.enroll import register
    from curvechat.crypto.identity import Identity
    from curvechat.protocol.connect import parse_connect

    taken = Identity.generate("alice")
    addresses = parse_connect(server.connect)
    assert await register(taken, addresses, wait=5, timeout=10, client_id="test")
    home = tmp_path / "newcomer"
    base, _, key = server.connect.rpartition("/")
    wrong = f"{base}/{key[:-6]}{'aaaaaa' if not key.endswith('aaaaaa') else 'bbbbbb'}"

    async def create(pilot, name: str, error: str | None = None) -> None:  # type: ignore[no-untyped-def]
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, CreateIdentityScreen) and app.screen.query("#setup-name")
            ),
            "create form",
        )
        screen = app.screen
        if error is not None:
            shown = screen.query_one("#setup-error", Static)
            await until(pilot, lambda: error in str(shown.render()), error)
            assert not Home(home).identity.exists()  # nothing kept while it asks again
        await pilot.pause()
        screen.query_one("#setup-name", Input).value = name
        screen.query_one("#setup-pass", Input).value = "one passphrase"
        screen.query_one("#setup-pass2", Input).value = "one passphrase"
        await pilot.click("#setup-ok")

    async def connect(pilot, text: str, error: str | None = None) -> None:  # type: ignore[no-untyped-def]
        # The screen and its widgets: a screen just pushed may not be composed yet.
        await until(
            pilot,
            lambda: isinstance(app.screen, ConnectScreen) and app.screen.query("#setup-server"),
            "connect form",
        )
        screen = app.screen
        if error is not None:
            shown = screen.query_one("#setup-error", Static)
            await until(pilot, lambda: error in str(shown.render()), error)
        await pilot.pause()
        screen.query_one("#setup-server", Input).value = text
        await pilot.click("#setup-ok")

    app = CurvechatApp(ChatSettings(home=home, client_options=FAST, cursor_blink=False))
    async with app.run_test(size=(100, 30)) as pilot:
        await create(pilot, "alice")
        await connect(pilot, wrong)
        await connect(pilot, server.connect, error="CURVE handshake")
        assert not Home(home).identity.exists()
        await create(pilot, "dora", error="name_taken")
        await ready(pilot, app)
        assert app.client.me == "dora"
    assert Home(home).identity.exists()


async def test_a_home_that_cannot_take_the_identity_registers_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The identity is written aside before the name is registered: a home
    that cannot be written ends the first run with the reason, and the name
    stays free."""
    from curvechat.client.enroll import register
    from curvechat.crypto.identity import Identity
    from curvechat.protocol.connect import parse_connect

    home = tmp_path / "not-a-directory"
    home.write_text("a file where the home should be\n")
    settings = ChatSettings(
        home=home, server=server.connect, client_options=FAST, cursor_blink=False
    )
    app = CurvechatApp(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CreateIdentityScreen), "create form")
        await pilot.pause()
        app.screen.query_one("#setup-name", Input).value = "dora"
        app.screen.query_one("#setup-pass", Input).value = "one passphrase"
        app.screen.query_one("#setup-pass2", Input).value = "one passphrase"
        await pilot.click("#setup-ok")
        await until(pilot, lambda: app.return_value == 1, "the app ends")
        # the reason is printed once the screen is gone
        assert any("cannot write your identity" in str(r) for r in app._exit_renderables)
    assert home.read_text() == "a file where the home should be\n"
    other = Identity.generate("dora")
    assert await register(other, parse_connect(server.connect), wait=5, timeout=10, client_id="t")


async def test_wrong_passphrase_is_asked_again(server: ServerProcess, kit) -> None:  # type: ignore[no-untyped-def]
    path = kit.home("erin", server.connect)
    app = CurvechatApp(ChatSettings(home=path, client_options=FAST, cursor_blink=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, UnlockScreen), "unlock form")
        app.screen.query_one("#setup-pass", Input).value = "wrong"
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, UnlockScreen)
                and "wrong passphrase" in str(app.screen.query_one("#setup-error", Static).render())
            ),
            "asked again",
        )
        app.screen.query_one("#setup-pass", Input).value = "correct horse battery staple"
        await pilot.press("enter")
        await ready(pilot, app)
        assert app.client.me == "erin"


# --- the real command in a terminal ----------------------------------------------------------
class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def pane(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def wait(self, cond: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        """Poll the pane until `cond` holds (a condition wait with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.pane()
            if cond(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the pane:\n{text}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "-L", self.socket, "has-session", "-t", "chat"],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        )

    def start_chat(self, home: Path, *env: str, size: tuple[int, int] = (100, 30)) -> None:
        """`curvechat chat` in a new session of `size` (100x30); `env` as NAME=VALUE."""
        command = f"{sys.executable} -m curvechat chat --home {home}"
        options = [x for pair in zip(["-e"] * len(env), env, strict=True) for x in pair]
        width, height = (str(n) for n in size)
        # COLUMNS and LINES win over the terminal's size: the test process may have them
        options += ["-e", f"COLUMNS={width}", "-e", f"LINES={height}"]
        self(
            "-f", "/dev/null", "new-session", "-d", "-s", "chat", "-x", width, "-y", height,
            "-e", "TERM=xterm-256color", *options, command,
        )  # fmt: skip

    def type(self, text: str) -> None:
        """Type `text` and press Enter."""
        self("send-keys", "-t", "chat", "-l", text)
        self("send-keys", "-t", "chat", "Enter")

    def paste(self, text: str) -> None:
        """Paste `text` (a bracketed paste, as a terminal does) and press Enter."""
        # from a file: tmux refuses a command line over 16 KiB (set-buffer TEXT)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as f:
            f.write(text)
            f.flush()
            self("load-buffer", "-b", "paste", f.name)
        self("paste-buffer", "-p", "-d", "-b", "paste", "-t", "chat")
        self("send-keys", "-t", "chat", "Enter")

    def unlock(self, passphrase: str) -> None:
        self.wait(lambda t: "Unlock your identity" in t, "the unlock screen")
        self.type(passphrase)
        self.wait(lambda t: "caught up 0 messages" in t, "connected")

    def quit(self) -> None:
        """/quit, then wait (bounded) for the app to exit."""
        self.type("/quit")
        deadline = time.monotonic() + 20
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def init_user(server: ServerProcess, home: Path, user: str, passphrase: str) -> dict[str, str]:
    env = {**os.environ, "CURVECHAT_HOME": str(home), "CURVECHAT_PASSPHRASE": passphrase}
    init = [sys.executable, "-m", "curvechat", "init", "--user", user, "--server"]
    subprocess.run([*init, server.connect], env=env, check=True, timeout=60, capture_output=True)
    return env


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_curvechat_chat_in_tmux(server: ServerProcess, tmp_path: Path) -> None:
    home = tmp_path / "frank"
    env = init_user(server, home, "frank", "frank's secret")
    env.pop("CURVECHAT_PASSPHRASE")
    tmux = Tmux(f"curvechat-test-{uuid.uuid4().hex[:8]}")
    tmux.start_chat(home, "TZ=UTC")
    try:
        tmux.unlock("frank's secret")
        tmux.type("/create notes")
        tmux.wait(lambda t: "created #notes" in t, "the room")
        tmux.type("hello from tmux")
        text = tmux.wait(
            lambda t: "»frank: hello from tmux" in t and "pending" not in t, "acked message"
        )
        assert "frank · tcp://127.0.0.1:" in text
        tmux.quit()
        assert not tmux.alive(), "curvechat chat did not exit on /quit"
    finally:
        tmux("kill-server")
    history = subprocess.run(
        [sys.executable, "-m", "curvechat", "history", "notes", "--home", str(home), "--json"],
        env={**env, "CURVECHAT_PASSPHRASE": "frank's secret"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert history.returncode == 0, history.stderr
    assert '"text": "hello from tmux"' in history.stdout


def _chromatic(escaped: str) -> set[str]:
    """Colours in a pane capture (`capture-pane -e`) that are not greys."""
    found: set[str] = set()
    for params in re.findall(r"\x1b\[([0-9;]*)m", escaped):
        codes = [int(p) if p else 0 for p in params.split(";")]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c in (38, 48) and i + 4 < len(codes) and codes[i + 1] == 2:
                r, g, b = codes[i + 2 : i + 5]
                if max(r, g, b) - min(r, g, b) > 8:
                    found.add(f"rgb({r},{g},{b})")
                i += 5
            elif c in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
                n = codes[i + 2]
                if 1 <= n <= 6 or 9 <= n <= 14 or 17 <= n <= 230:
                    found.add(f"palette {n}")
                i += 3
            else:
                if 31 <= c <= 36 or 41 <= c <= 46 or 91 <= c <= 96 or 101 <= c <= 106:
                    found.add(f"sgr {c}")
                i += 1
    return found


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("no_color", [False, True])
def test_no_color_means_greys_only(server: ServerProcess, tmp_path: Path, no_color: bool) -> None:
    """With NO_COLOR set the app draws in greys only; without it, in colour
    (the control, so that the check can fail)."""
    home = tmp_path / "gina"
    init_user(server, home, "gina", "gina's secret")
    tmux = Tmux(f"curvechat-test-{uuid.uuid4().hex[:8]}")
    tmux.start_chat(home, "COLORTERM=truecolor", *(["NO_COLOR=1"] if no_color else []))
    try:
        tmux.unlock("gina's secret")
        escaped = tmux("capture-pane", "-p", "-e", "-t", "chat")
        tmux.quit()
    finally:
        tmux("kill-server")
    assert "\x1b[" in escaped  # drawn with attributes and colours, not as plain text
    colours = _chromatic(escaped)
    if no_color:
        assert not colours, sorted(colours)
    else:
        assert colours, "the control run drew no colour at all"


async def test_a_saved_server_key_that_is_wrong_is_said_once_with_what_to_do(
    server: ServerProcess,
    kit,  # type: ignore[no-untyped-def]
) -> None:
    base, _, key = server.connect.rpartition("/")
    wrong = f"{base}/{key[:-6]}{'aaaaaa' if not key.endswith('aaaaaa') else 'bbbbbb'}"
    path = kit.home("erin", wrong)
    settings = ChatSettings(
        home=path, passphrase=PASSPHRASE, client_options=FAST, cursor_blink=False
    )
    app = CurvechatApp(settings)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.chat is not None, "chat screen")
        chat = app.chat

        def told() -> int:
            log = chat.current_log()
            return sum("failed the CURVE handshake" in str(e) for e in log.entries)

        await until(pilot, lambda: told() == 1, "the notice")
        # more failed attempts do not repeat it
        failed = app.client.conn.status.attempt
        await until(pilot, lambda: app.client.conn.status.attempt > failed + 1, "more attempts")
        assert told() == 1


async def test_a_saved_server_file_that_cannot_be_read_is_asked_for_again(
    server: ServerProcess,
    kit,  # type: ignore[no-untyped-def]
) -> None:
    path = kit.home("fay", server.connect)
    (path / "server").write_bytes(b"\xff\xfe not UTF-8")
    settings = ChatSettings(
        home=path, passphrase=PASSPHRASE, client_options=FAST, cursor_blink=False
    )
    app = CurvechatApp(settings)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, ConnectScreen) and app.screen.query("#setup-error"),
            "connect form",
        )
        shown = app.screen.query_one("#setup-error", Static)
        await until(pilot, lambda: "saved server address" in str(shown.render()), "why")
        await pilot.pause()
        app.screen.query_one("#setup-server", Input).value = server.connect
        await pilot.click("#setup-ok")
        await until(pilot, lambda: app.chat is not None, "chat screen")


async def test_quitting_once_the_registration_was_sent_keeps_the_identity(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server may have bound the name to the key by then: removing the
    identity (as the first run did on any exception) lost the name."""
    import asyncio

    from curvechat.client import enroll
    from curvechat.crypto.identity import Identity
    from curvechat.protocol.connect import parse_connect

    async def sent_then_quit(
        *args: object, progress: enroll.Progress | None = None, **kw: object
    ) -> bool:
        if progress is not None:
            progress.sent = True
        raise asyncio.CancelledError

    monkeypatch.setattr(enroll, "register", sent_then_quit)
    home = Home(tmp_path / "h")
    app = CurvechatApp(ChatSettings(home=home.path, client_options=FAST, cursor_blink=False))
    async with app.run_test(size=(80, 24)):
        with pytest.raises(asyncio.CancelledError):
            await app._enroll(
                home, Identity.generate("dora"), b"one passphrase", parse_connect(server.connect)
            )
    assert home.identity.exists()
