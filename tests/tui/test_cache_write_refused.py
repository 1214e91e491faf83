"""The local cache refuses a write when Enter is pressed (a full disk:
SQLite's "database or disk is full"): the message is not queued, one `!!`
line says why, the typed line goes back into the input, and the app lives
on. A bug that does reach Textual ends the app with status 1 and one line,
its traceback in the log: never Textual's traceback, which prints the
locals of every frame (the text of a message among them)."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from curvechat.tui.app import CurvechatApp
from curvechat.tui.screens.setup import ConnectScreen
from curvechat.tui.settings import ChatSettings
from curvechat.tui.widgets.composer import Composer

from .conftest import PASSPHRASE, Kit, ready, say, shown, until
from support.servers import ServerProcess

SECRET = "meet me at the old mill at nine"


def full(*args: object, **kw: object) -> None:
    raise sqlite3.OperationalError("database or disk is full")


async def test_enter_on_a_full_disk_says_so_and_gives_the_line_back(
    server: ServerProcess, kit: Kit
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        chat = app.chat
        assert chat is not None and app.client is not None
        await app.client.create_room("den", [])
        await until(pilot, lambda: "den" in chat.room_ids(), "den")
        chat.switch_room("den")
        enqueue = app.client.cache.enqueue_many
        app.client.cache.enqueue_many = full  # type: ignore[method-assign]
        await say(pilot, app, SECRET)
        await until(pilot, lambda: "!! Your message was not queued" in shown(app), "said")
        assert app.is_running
        assert chat.query_one(Composer).text == SECRET  # back in the input, to send again
        assert app.client.pending() == [] and SECRET not in shown(app)
        # a command that sends: the whole command line comes back
        await say(pilot, app, f"/g den {SECRET}")
        await until(pilot, lambda: chat.query_one(Composer).text == f"/g den {SECRET}", "back")
        # once the disk has room again, Enter sends it
        app.client.cache.enqueue_many = enqueue  # type: ignore[method-assign]
        chat.query_one(Composer).text = SECRET
        await pilot.press("enter")
        await until(pilot, lambda: f"alice: {SECRET}" in shown(app), "sent")
        assert "Traceback" not in shown(app)


async def test_a_bug_ends_the_app_with_one_line_and_no_locals(
    kit: Kit, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="curvechat.tui")
    home = kit.home("alice")  # no server saved: the app asks for one
    app = CurvechatApp(ChatSettings(home=home, passphrase=PASSPHRASE, cursor_blink=False))

    def bug() -> None:
        draft = SECRET  # a local, as the text being sent is in a real bug's frames
        raise RuntimeError(f"a bug ({len(draft)})")

    with pytest.raises(RuntimeError, match="a bug"):
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ConnectScreen), "setup")
            app.call_later(bug)
            await until(pilot, lambda: app.return_code == 1, "the app ends")
    err = capsys.readouterr().err
    assert "curvechat: stopped on a bug (RuntimeError); the details are in chat.log" in err
    assert SECRET not in err and "Traceback" not in err
    assert "stopped on a bug" in caplog.text and "RuntimeError: a bug" in caplog.text
