# hypothesis is imported here, at collection, on purpose: its pytest plugin
# otherwise imports it at session end from deep inside pytest's hook stack, where
# CPython 3.11.7 can fail to parse it ("AST constructor recursion depth mismatch").
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import hypothesis  # noqa: F401
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
