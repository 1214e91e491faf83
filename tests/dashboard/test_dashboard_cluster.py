"""The dashboard of one node shows the whole cluster: the other nodes come
from the etcd registry, the node that served the page fetches their state
for it (with the cluster's shared HTTP token) so the page never talks to
another origin, a node with another token is shown as refusing it, and a
node killed with -9 is shown as unreachable while the page keeps running."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from .conftest import Chromium
from support.etcd import etcd_cluster
from support.servers import ServerProcess


def get_json(url: str, token: str, origin: str | None = None) -> tuple[int, dict, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"}
    if origin:
        headers["Origin"] = origin
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


async def test_dashboard_shows_every_node_through_its_own(
    tmp_path: Path, browser: Chromium
) -> None:
    with etcd_cluster(tmp_path / "etcd", size=1) as etcd:
        url = f"{etcd.url}/t-{uuid.uuid4().hex}"
        shared = tmp_path / "cluster-http.token"  # made by A's first start, given to B
        cluster = ("--store", url, "--http-require-token", "--http-token-file", str(shared))
        a = ServerProcess(tmp_path / "a", extra_args=cluster).start()
        b = ServerProcess(tmp_path / "b", extra_args=cluster).start()
        # C has a token of its own: A's requests for its state are refused.
        c = ServerProcess(tmp_path / "c", extra_args=("--store", url, "--http-require-token"))
        c.start()
        token = shared.read_text().strip()
        try:
            others = {f"http://127.0.0.1:{p.http_port}/" for p in (b, c)}
            # A learns the registry through a watch: C, registered last, may
            # reach it a moment after C said it was ready.
            deadline = time.monotonic() + 15
            while True:
                status, nodes, _ = get_json(f"http://127.0.0.1:{a.http_port}/api/nodes", token)
                assert status == 200
                listed = nodes["nodes"]
                by_url = {n["url"]: n for n in listed[1:]}
                if set(by_url) == others or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert listed[0]["url"] == "" and listed[0]["state"] == "api/state"  # this node first
            assert set(by_url) == others
            b_name = by_url[f"http://127.0.0.1:{b.http_port}/"]["name"]
            c_name = by_url[f"http://127.0.0.1:{c.http_port}/"]["name"]
            assert by_url[f"http://127.0.0.1:{b.http_port}/"]["state"] == (
                f"api/peers/{quote(b_name, safe='')}/state"
            )
            # A fetches B's state with the shared token and passes it on
            status, state, _ = get_json(
                f"http://127.0.0.1:{a.http_port}/api/peers/{quote(b_name, safe='')}/state", token
            )
            assert status == 200 and state["node"]["name"] == b_name
            # ... C's is refused, and A says why
            status, state, _ = get_json(
                f"http://127.0.0.1:{a.http_port}/api/peers/{quote(c_name, safe='')}/state", token
            )
            assert status == 502 and "refused this node's token" in state["error"]
            # only the registry's nodes, never a URL of the caller's choosing
            status, _, _ = get_json(f"http://127.0.0.1:{a.http_port}/api/peers/x/state", token)
            assert status == 404
            # B's own API answers no other origin
            status, _, headers = get_json(
                f"http://127.0.0.1:{b.http_port}/api/state", token, origin="http://127.0.0.1:1"
            )
            assert status == 200
            assert not any(h.lower().startswith("access-control-") for h in headers)

            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{a.http_port}/#token={token}")
            await page.wait_for(
                "document.querySelectorAll('.node[data-up=true]').length === 2"
                f" && document.querySelector('.node[data-node=\"{c_name}\"][data-up=false]')",
                what="A and B up on A's page, C refusing the token",
            )
            c_card = await page.evaluate(
                f"document.querySelector('.node[data-node=\"{c_name}\"]').innerText"
            )
            assert "refused this node's token" in c_card, c_card
            b.kill()
            await page.wait_for(
                f"document.querySelector('.node[data-node=\"{b_name}\"][data-up=false]')"
                " && document.querySelector('.node[data-up=true]')"
                " && document.querySelector('#events li[data-kind=node_down]')",
                what="B shown as unreachable, A still up",
            )
            # Everything the page loaded came from A.
            origins = await page.evaluate(
                "[...new Set(performance.getEntriesByType('resource')"
                ".map((e) => new URL(e.name).origin))]"
            )
            assert origins == [f"http://127.0.0.1:{a.http_port}"], origins
        finally:
            codes = {"a": a.stop(), "b": b.stop(), "c": c.stop()}
        assert codes["a"] == 0, a.log()[-3000:]
        for marker in ("Traceback", "never retrieved", "did not finish within"):
            assert marker not in a.log()
