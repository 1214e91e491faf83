"""The node's page shows etcd's quota use on the node's card (as text, amber
from 60 %) and the node's `etcd_quota_60` event, on a real etcd that is
already more than 60 % of the quota the node was given."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from curvechat.store.etcd import EtcdStore

if TYPE_CHECKING:
    from .conftest import Chromium
from support.etcd import etcd_cluster
from support.servers import ServerProcess

QUOTA = 1024 * 1024  # what the node is told; etcd itself has its default


async def test_page_shows_the_quota_and_its_event(tmp_path: Path, browser: Chromium) -> None:
    with etcd_cluster(tmp_path / "etcd", size=1) as etcd:
        filler = EtcdStore(etcd.endpoints.split(","), prefix="/filler/")
        await filler.open()
        try:
            for i in range(170):  # about a 4 KiB page each: some 70 % of 1 MiB
                await filler.put(f"/filler/{i:04d}".encode(), b"x" * 2000)
        finally:
            await filler.close()
        url = f"{etcd.url}/t-{uuid.uuid4().hex}"
        node = ServerProcess(
            tmp_path / "a", extra_args=("--store", url, "--etcd-quota-bytes", str(QUOTA))
        ).start()
        try:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{node.http_port}/")
            await page.wait_for(
                "document.querySelector('.node[data-up=true] .node-quota[data-quota=warn],"
                " .node[data-up=true] .node-quota[data-quota=bad]')"
                " && document.querySelector('#events li[data-kind=etcd_quota_60]')",
                what="the quota line over 60 % and its event",
            )
            line = await page.evaluate("document.querySelector('.node-quota').innerText")
            assert "etcd quota" in line and "of 1.0 MiB" in line and "quota configured" in line
            assert "% used" in line, line
            (tmp_path / "dashboard-quota.png").write_bytes(await page.screenshot())
        finally:
            code = node.stop()
        assert code == 0, node.log()[-3000:]
        assert "Traceback" not in node.log()
