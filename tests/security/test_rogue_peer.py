"""A node once named another server in its welcome (`peers`): a server of
its choosing, which the client then dialed. The next run of the client
starts from the nodes its connect string gives, not from the one that
welcome named, so a node that named a rogue once (and is honest again, or
was only impersonated for one connection) does not keep its clients on the
rogue for good (security.md 6.8)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from curvechat.client.home import Home
from curvechat.client.open import open_client
from curvechat.client.recall import LAST_NODE
from curvechat.crypto.identity import Identity
from curvechat.protocol.connect import format_connect, parse_connect

from support.servers import ServerProcess


@pytest.fixture
def rogue(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "rogue").start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_a_node_a_welcome_named_once_is_not_preferred_by_the_next_run(
    server: ServerProcess, rogue: ServerProcess, tmp_path: Path
) -> None:
    given = parse_connect(server.connect)
    home = Home(tmp_path / "alice")
    home.path.mkdir(parents=True)
    ident = Identity.generate("alice")
    # What the last run remembered: connected to the rogue, which the
    # node's welcome had named as the only live node.
    client = open_client(home, ident, given, client_id="t")
    row = {"given": format_connect(given), "node": rogue.connect, "live": [rogue.connect]}
    client.cache.set_meta(LAST_NODE, json.dumps(row))
    await client.close()
    for _ in range(2):
        client = open_client(home, ident, given, client_id="t")
        await client.start()
        try:
            assert await client.wait_ready(20)
            assert client.status.endpoint == server.endpoint
        finally:
            await client.close()
