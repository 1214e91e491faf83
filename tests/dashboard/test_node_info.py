"""What the dashboard's state says about where the node is: the endpoint
clients are told to dial (`--advertise`), and the address it bound."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from support.servers import ServerProcess


async def state_of(proc: ServerProcess) -> dict[str, object]:
    url = f"http://127.0.0.1:{proc.http_port}/api/state"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        node: dict[str, object] = json.loads(await resp.text())["node"]
        return node


async def test_the_node_shows_the_endpoint_clients_dial_and_the_one_it_bound(
    tmp_path: Path,
) -> None:
    proc = ServerProcess(tmp_path / "a", extra_args=("--advertise", "tcp://chat.example:7777"))
    proc.start()
    try:
        node = await state_of(proc)
        assert node["endpoint"] == "tcp://chat.example:7777"
        assert node["bound"] == proc.endpoint
        assert "connect string: curvechat://chat.example:7777/" in "".join(proc.stdout)
    finally:
        assert proc.stop() == 0
    plain = ServerProcess(tmp_path / "b").start()
    try:
        node = await state_of(plain)
        assert node["endpoint"] == node["bound"] == plain.endpoint
    finally:
        assert plain.stop() == 0
