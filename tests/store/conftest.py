"""Fixtures that run the store contract tests against every backend.

A backend is a context manager taking the test's tmp_path and yielding a
factory: each call returns a new, unopened `Store` on the SAME backing
storage (so a test can close one store and open another to check
durability). To add a backend (etcd), write one such function and add it to
BACKENDS; every contract test then runs against it too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from curvechat.store import SQLiteStore, Store
from curvechat.store.etcd import EtcdStore

from support.etcd import EtcdCluster, etcd_cluster, fresh_store

StoreFactory = Callable[[], Store]


@contextlib.contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[StoreFactory]:
    # A directory that does not exist yet: the store must create it.
    path = tmp_path / "state" / "curvechat.sqlite3"
    yield lambda: SQLiteStore(path)


_ETCD: list[EtcdCluster] = []  # the module's etcd, set by the `etcd_for_store` fixture


@contextlib.contextmanager
def etcd_backend(tmp_path: Path) -> Iterator[StoreFactory]:
    # One etcd per test module (fast); each test gets a fresh key prefix.
    assert _ETCD, "the etcd backend needs the etcd_for_store fixture"
    prefix = f"/test-{uuid.uuid4().hex}/"
    endpoints = _ETCD[-1].endpoints.split(",")
    yield lambda: EtcdStore(endpoints, prefix=prefix)


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractContextManager[StoreFactory]]] = {
    "sqlite": sqlite_backend,
    "etcd": etcd_backend,
}


@pytest.fixture(scope="module")
def etcd_for_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        _ETCD.append(cluster)
        try:
            yield cluster
        finally:
            _ETCD.remove(cluster)


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    if request.param == "etcd":
        request.getfixturevalue("etcd_for_store")
    with BACKENDS[request.param](tmp_path) as factory:
        yield factory


@pytest.fixture
async def etcd_store(etcd_for_store: EtcdCluster) -> AsyncIterator[EtcdStore]:
    """An EtcdStore alone on a fresh prefix of the module's etcd."""
    async with fresh_store(etcd_for_store) as s:
        yield s


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    s = store_factory()
    await s.open()
    try:
        yield s
    finally:
        await s.close()
