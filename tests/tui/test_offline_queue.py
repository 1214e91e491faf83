"""A message `curvechat send` queued while the server was down goes out
when the terminal client next connects, exactly once (issue 15, item 1)."""

from __future__ import annotations

import os
import subprocess
import sys

from curvechat.tui.app import CurvechatApp
from curvechat.tui.settings import ChatSettings

from .conftest import PASSPHRASE, Kit, ready, say, until
from support.clients import FAST, ClientFactory
from support.servers import ServerProcess


async def test_the_tui_delivers_what_send_queued_offline(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    home = kit.root / "alice"
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        bob, bob_events = await clients.make("bob", server.connect)
        await say(pilot, app, "/create team bob")
        await until(pilot, lambda: app.chat is not None and app.chat.current == "team", "#team")
    await clients.close(bob)

    server.stop()
    env = {**os.environ, "CURVECHAT_HOME": str(home), "CURVECHAT_PASSPHRASE": PASSPHRASE.decode()}
    env.pop("CURVECHAT_AGENT", None)
    queued = subprocess.run(
        [sys.executable, "-m", "curvechat", "send", "team", "written offline"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert queued.returncode == 75, queued.stderr
    server.start()

    again = CurvechatApp(
        ChatSettings(home=home, passphrase=PASSPHRASE, client_options=FAST, cursor_blink=False)
    )
    async with again.run_test(size=(100, 30)) as pilot:
        await ready(pilot, again)
        client = again.client
        assert client is not None
        await until(pilot, lambda: not client.pending(), "the outbox emptied")
        texts = [m.text for m in client.cache.messages("team")]
        assert texts == ["written offline"]
    bob, bob_events = await clients.make("bob", server.connect, home_name="bob")
    await bob_events.until(lambda: [m.text for m in bob.cache.messages("team")] != [])
    assert [m.text for m in bob.cache.messages("team")] == ["written offline"]
