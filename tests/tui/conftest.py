"""Fixtures for the terminal client's tests: homes with fast-to-open
identities, settings with fast liveness, a fixed time zone, and helpers that
wait for a condition (never for a fixed time)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaos.proxy import ProxyHub
from nacl.pwhash import argon2id

from curvechat.client.home import Home
from curvechat.client.state import Backoff
from curvechat.crypto.identity import Identity
from curvechat.crypto.keyfile import seal_identity
from curvechat.tui.app import CurvechatApp
from curvechat.tui.settings import ChatSettings
from curvechat.tui.widgets.composer import Composer
from curvechat.tui.widgets.timeline import Timeline

from support.clients import FAST
from support.servers import ServerProcess

PASSPHRASE = b"correct horse battery staple"

LINK_LATENCY = 0.15
"""Seconds each way on `slow_link`: a server across a WAN, or a cluster node
that answers after a store round trip."""


@dataclass(frozen=True)
class FixedBackoff(Backoff):
    """Always the same wait, so a test decides when a client comes back
    (with the app's reconnect-now key) instead of a random timer."""

    wait: float = 60.0

    def delay(self, attempt: int, rng: Any = None) -> float:
        return self.wait


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Timestamps render in local time: make local time UTC for the tests."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


class Kit:
    def __init__(self, root: Path) -> None:
        self.root = root

    def home(self, user: str, connect: str | None = None) -> Path:
        """A home with `user`'s identity (sealed with cheap KDF limits) and
        the server saved, as `curvechat init` leaves it."""
        home = Home(self.root / user)
        home.ensure()
        seal_identity(
            Identity.generate(user),
            PASSPHRASE,
            home.identity,
            opslimit=argon2id.OPSLIMIT_INTERACTIVE,
            memlimit=argon2id.MEMLIMIT_INTERACTIVE,
        )
        if connect:
            home.save_server(connect)
        return home.path

    def app(self, user: str, connect: str, **options: Any) -> CurvechatApp:
        client_options = {**FAST, **options.pop("client_options", {})}
        settings = ChatSettings(
            home=self.home(user, connect),
            passphrase=PASSPHRASE,
            client_options=client_options,
            cursor_blink=False,
            **options,
        )
        return CurvechatApp(settings)


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return Kit(tmp_path / "tui")


@pytest.fixture
def slow_link(server: ServerProcess) -> Iterator[str]:
    """The server's connect string through a TCP proxy that delays every
    byte by `LINK_LATENCY` each way (order kept). On one machine a reply
    comes back before the screen is next drawn; across a real network it
    does not, and the races of a real session show up."""
    hub = ProxyHub()
    try:
        proxy = hub.add("client", server.port)
        proxy.set(latency=LINK_LATENCY)
        connect = server.connect.replace(f"127.0.0.1:{server.port}", proxy.endpoint)
        assert connect != server.connect
        yield connect
    finally:
        hub.close()


async def until(pilot: Any, cond: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def ready(pilot: Any, app: CurvechatApp) -> None:
    await until(pilot, lambda: app.chat is not None and app.chat.connected_once, "first sync")


async def say(pilot: Any, app: CurvechatApp, line: str) -> None:
    """Type `line` into the input and press Enter."""
    assert app.chat is not None
    composer = app.chat.query_one(Composer)
    composer.focus()
    composer.text = line
    composer.move_cursor(composer.document.end)
    await pilot.press("enter")
    if app.is_running:
        await pilot.pause()


def shown(app: CurvechatApp) -> str:
    """The whole room log as text (one row per line, scrolled or not)."""
    assert app.chat is not None
    return app.chat.query_one(Timeline).plain()


def on_screen(app: CurvechatApp) -> str:
    """What the timeline shows on the screen right now: the rows the
    compositor draws in the timeline's region (not what is scrolled away)."""
    assert app.chat is not None
    region = app.chat.query_one(Timeline).content_region
    rows = app.screen._compositor.render_strips()[region.y : region.bottom]
    return "\n".join(row.text[region.x : region.right].rstrip() for row in rows)
