from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.servers import ServerProcess

EVIL = Path(__file__).with_name("evil_node.py")


class EvilServer(ServerProcess):
    """Our server with tampering hooks, steered through `tamper.json`."""

    def __init__(self, data: Path) -> None:
        super().__init__(data, program=(str(EVIL),))
        self._version = 0

    def attack(self, **plan: Any) -> None:
        """Switch the tampering to `plan` ({} for honest), atomically."""
        self._version += 1
        path = self.data / "tamper.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        os.utime(tmp, ns=(self._version * 10**9, self._version * 10**9))
        os.replace(tmp, path)


@pytest.fixture
def evil(tmp_path: Path) -> Iterator[EvilServer]:
    proc = EvilServer(tmp_path / "evil")
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
    log = proc.log()
    assert code == 0, f"evil server exited with {code}:\\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def bulk_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A node whose byte budget (`--rate-user-bytes`) is out of the way, for
    tests that send megabytes to test something else (flow control, pages)."""
    proc = ServerProcess(tmp_path / "node", extra_args=("--rate-user-bytes", "1e12")).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0
