"""Where the monitor finds its nodes: URLs as given (normalised), the
cluster registry in a real etcd (entries written the way the nodes write
them), and what discovery does with a node that leaves the list."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from curvechat.monitor.archive import Archive
from curvechat.monitor.poller import NodePoller
from curvechat.monitor.sources import EtcdRegistry, SourceUnavailable, UrlList, node_url
from curvechat.monitor.timeline import Timeline
from curvechat.monitor.view import MonitorView
from curvechat.monitor.watcher import Watcher

from support.etcd import etcd_cluster
from support.servers import ServerProcess, free_port

if TYPE_CHECKING:
    from .conftest import MakeMonitor


def test_node_urls_are_normalised() -> None:
    assert node_url("127.0.0.1:7780") == "http://127.0.0.1:7780"
    assert node_url("http://Node-1.example:7780/") == "http://node-1.example:7780"
    assert node_url("https://[::1]:7780/prefix/") == "https://[::1]:7780/prefix"
    for bad in ("ftp://x:1", "http://", "http://h:1/?a=b", "http://u:p@h:1", "http://h:99999"):
        with pytest.raises(ValueError):
            node_url(bad)
    assert UrlList(["h:1", "http://h:1/", "h:2"])._urls == ["http://h:1", "http://h:2"]


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)")
async def test_the_registry_lists_the_nodes_with_an_http_side(tmp_path: Path) -> None:
    from curvechat.server.cluster import NodeInfo
    from curvechat.store.etcd import EtcdStore, parse_etcd_url

    with etcd_cluster(tmp_path / "etcd") as etcd:
        url = f"{etcd.url}/t-{uuid.uuid4().hex}"
        endpoints, prefix = parse_etcd_url(url)
        writer = EtcdStore(endpoints, prefix=prefix)
        await writer.open()
        try:
            now = int(time.time() * 1000)
            for info in (
                NodeInfo("a", "tcp://h:7700", "up", now, "http://10.0.0.1:7780/"),
                NodeInfo("b", "tcp://h:7701", "up", now, "http://10.0.0.2:7780/"),
                NodeInfo("c", "tcp://h:7702", "up", now),  # serves no HTTP
            ):
                await writer.put(writer.k_node(info.name), msgspec.msgpack.encode(info))
            await writer.put(writer.k_node("junk"), b"\xc1 not msgpack")
            registry = EtcdRegistry(url)
            try:
                assert await registry.urls() == ["http://10.0.0.1:7780", "http://10.0.0.2:7780"]
            finally:
                await registry.close()
        finally:
            await writer.close()

    gone = EtcdRegistry(f"etcd://127.0.0.1:{free_port()}")
    with pytest.raises(SourceUnavailable, match="the etcd registry is unreachable"):
        await gone.urls()
    await gone.close()


class ListedNodes:
    """A source whose list the test sets."""

    description = "etcd registry"

    def __init__(self, urls: list[str]) -> None:
        self.listed = urls

    async def urls(self) -> list[str]:
        return list(self.listed)

    async def close(self) -> None:
        return None


async def test_a_node_that_leaves_the_registry_is_watched_on(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.open()
    source = ListedNodes(["http://a:1", "http://b:1"])
    view = MonitorView(Timeline())
    watcher = Watcher(view, source, NodePoller(None), archive)  # type: ignore[arg-type]
    watcher._watch = lambda url: None  # type: ignore[method-assign] # no polling here
    await watcher.discover()
    assert set(view.nodes) == {"http://a:1", "http://b:1"}
    # b's lease expired (it was killed): it is an outage, not a departure
    source.listed = ["http://a:1"]
    await watcher.discover()
    assert set(view.nodes) == {"http://a:1", "http://b:1"} and not view.nodes["http://b:1"].listed
    # out of the registry and down for longer than forget_after_s: forgotten
    watcher.forget_after_s = 0.0
    await watcher.discover()
    assert set(view.nodes) == {"http://a:1"}
    assert view.timeline.events[-1].kind == "node_forgotten"
    archive.close()


async def test_a_list_from_the_command_line_replaces_the_last_one(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.open()
    view = MonitorView(Timeline())
    view.add_node("http://old:1", source="earlier run", listed=False)
    watcher = Watcher(view, UrlList(["http://new:1"]), NodePoller(None), archive)  # type: ignore[arg-type]
    watcher._watch = lambda url: None  # type: ignore[method-assign]
    await watcher.discover()
    assert set(view.nodes) == {"http://new:1"}
    archive.close()


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)")
async def test_the_monitor_finds_a_cluster_node_in_etcd(
    tmp_path: Path, monitors: MakeMonitor
) -> None:
    with etcd_cluster(tmp_path / "etcd") as etcd:
        url = f"{etcd.url}/t-{uuid.uuid4().hex}"
        node = ServerProcess(tmp_path / "node", extra_args=("--store", url)).start()
        try:
            monitor = monitors(tmp_path / "monitor", [], ("--store", url)).start()
            token = (tmp_path / "monitor" / "http.token").read_text().strip()
            node_url_ = f"http://127.0.0.1:{node.http_port}"

            def overview() -> dict[str, Any]:
                request = urllib.request.Request(
                    monitor.url + "api/overview", headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(request, timeout=5) as resp:
                    body: dict[str, Any] = json.loads(resp.read())
                    return body

            async with asyncio.timeout(20):
                while not any(
                    n["url"] == node_url_ and n["health"] == "up" for n in overview()["nodes"]
                ):
                    await asyncio.sleep(0.2)  # polling the monitor's answer, bounded above
            [entry] = overview()["nodes"]
            assert entry["source"] == "etcd registry" and entry["listed"]
        finally:
            assert node.stop() == 0
