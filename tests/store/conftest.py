"""Fixtures that run the store contract tests against every backend.

A backend is a context manager taking the test's tmp_path and yielding a
factory: each call returns a new, unopened `Store` on the SAME backing
storage (so a test can close one store and open another to check
durability). To add a backend (etcd), write one such function and add it to
BACKENDS; every contract test then runs against it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from curvechat.store import SQLiteStore, Store

StoreFactory = Callable[[], Store]


@contextlib.contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[StoreFactory]:
    # A directory that does not exist yet: the store must create it.
    path = tmp_path / "state" / "curvechat.sqlite3"
    yield lambda: SQLiteStore(path)


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractContextManager[StoreFactory]]] = {
    "sqlite": sqlite_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    with BACKENDS[request.param](tmp_path) as factory:
        yield factory


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    s = store_factory()
    await s.open()
    try:
        yield s
    finally:
        await s.close()
