from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.clients import ClientFactory
from support.servers import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "node").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    factory = ClientFactory(tmp_path / "homes")
    try:
        yield factory
    finally:
        await factory.close_all()
