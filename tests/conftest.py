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

# Whole clusters and the chaos run measure time under faults: `make test` runs
# them alone, after the rest (which runs on two workers).
ALONE = ("tests/cluster/", "tests/chaos/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(ALONE):
            item.add_marker(pytest.mark.alone)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "node").start()
    try:
        yield proc
    finally:
        code = proc.stop()
    # Every test also checks the server's health: a clean stop on SIGINT and
    # no traceback or unretrieved exception anywhere in its log.
    log = proc.log()
    assert code == 0, f"server exited with {code}:\n{log[-3000:]}"
    for marker in ("Traceback", "never retrieved", "did not finish within"):
        assert marker not in log, f"{marker!r} in the server log:\n{log[-3000:]}"


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    factory = ClientFactory(tmp_path / "homes")
    try:
        yield factory
    finally:
        await factory.close_all()
