"""The real `curvechat` command for the CLI tests: one home per user, the
passphrase in the environment, a running `tail` read line by line
(`support/cli.py`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.cli import CliUser, Tail
from support.servers import ServerProcess


@pytest.fixture
def cli(tmp_path: Path, server: ServerProcess) -> Callable[[str], CliUser]:
    """`cli("alice")`: a user with a home of their own under tmp_path."""
    return lambda name: CliUser(name, tmp_path / name, server)


@pytest.fixture
def tails() -> Iterator[Callable[..., Tail]]:
    """`tails(user, room, *args)`: a running `tail`, stopped at the end."""
    started: list[Tail] = []

    def start(user: CliUser, room: str, *extra: str) -> Tail:
        tail = Tail(user, room, *extra)
        started.append(tail)
        return tail

    yield start
    for tail in started:
        tail.stop()
