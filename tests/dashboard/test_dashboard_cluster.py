"""The dashboard of one node shows the whole cluster: the other nodes come
from the etcd registry, the page polls each of them, and a node killed with
-9 is shown as unreachable while the page keeps running."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Chromium
from support.etcd import etcd_cluster
from support.servers import ServerProcess


def get_json(url: str, origin: str | None = None) -> tuple[dict, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(url, headers={"Origin": origin} if origin else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read()), dict(resp.headers)


async def test_dashboard_lists_and_polls_every_node(tmp_path: Path, browser: Chromium) -> None:
    with etcd_cluster(tmp_path / "etcd", size=1) as etcd:
        url = f"{etcd.url}/t-{uuid.uuid4().hex}"
        a = ServerProcess(tmp_path / "a", extra_args=("--store", url)).start()
        b = ServerProcess(tmp_path / "b", extra_args=("--store", url)).start()
        try:
            nodes, _ = get_json(f"http://127.0.0.1:{a.http_port}/api/nodes")
            listed = nodes["nodes"]
            assert listed[0]["url"] == ""  # this node first
            assert [n["url"] for n in listed[1:]] == [f"http://127.0.0.1:{b.http_port}/"]
            # another node's page may poll this one's state
            _, headers = get_json(
                f"http://127.0.0.1:{b.http_port}/api/state", origin="http://127.0.0.1:1"
            )
            assert headers.get("Access-Control-Allow-Origin") == "*"

            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{a.http_port}/")
            await page.wait_for(
                "document.querySelectorAll('.node[data-up=true]').length === 2",
                what="both nodes up on A's page",
            )
            b_name = listed[1]["name"]
            b.kill()
            await page.wait_for(
                f"document.querySelector('.node[data-node=\"{b_name}\"][data-up=false]')"
                " && document.querySelector('.node[data-up=true]')"
                " && document.querySelector('#events li[data-kind=node_down]')",
                what="B shown as unreachable, A still up",
            )
        finally:
            codes = {"a": a.stop(), "b": b.stop()}
        assert codes["a"] == 0, a.log()[-3000:]
        for marker in ("Traceback", "never retrieved", "did not finish within"):
            assert marker not in a.log()
