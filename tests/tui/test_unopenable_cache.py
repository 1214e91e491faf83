"""A home whose local cache cannot be opened (damaged or truncated, a
directory where the file should be): the terminal client ends at once with
status 1 and says, once the screen is gone, what failed and what to do
(move cache.db aside: the history comes back from the server, but what
that file's outbox still held is lost). Before, it left a blank screen
that answered only Ctrl+Q, and exited 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from curvechat.tui.app import CurvechatApp
from curvechat.tui.settings import ChatSettings

from .conftest import PASSPHRASE, Kit, until
from support.servers import ServerProcess


def damaged(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite file" * 1000)


def truncated(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(84))


def directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("spoil", [damaged, truncated, directory])
async def test_an_unopenable_cache_ends_the_app_with_what_to_do(
    server: ServerProcess, kit: Kit, spoil: object
) -> None:
    home = Path(kit.home("alice", server.connect))
    spoil(home / "cache.db")  # type: ignore[operator]
    app = CurvechatApp(ChatSettings(home=home, passphrase=PASSPHRASE, cursor_blink=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.return_value == 1, "the app ends by itself")
        said = "\n".join(str(r) for r in app._exit_renderables)
    assert app.chat is None
    assert "curvechat: error [bad_cache]: cannot open the local cache" in said
    assert f"Move {home / 'cache.db'} aside" in said
    assert "history comes back from the server" in said
    assert "messages still queued in that file's outbox are lost" in said
