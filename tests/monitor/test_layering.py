"""The monitor reads nodes only over HTTP: importing it loads neither the
chat server, the store, the client, zmq nor the crypto (checked in a fresh
interpreter). Its page's files are package data and load nothing from
elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

FORBIDDEN = ("zmq", "curvechat.store", "curvechat.client", "curvechat.crypto", "nacl", "grpc")
SERVER_ALLOWED = {"curvechat.server", "curvechat.server.httpguard", "curvechat.server.httpload"}


def test_the_monitor_does_not_load_the_server_or_the_store() -> None:
    code = (
        "import json, sys\n"
        "import curvechat.monitor.app, curvechat.monitor.sources\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "curvechat.monitor.watcher" in loaded and "aiohttp" in loaded
    bad = sorted(n for n in loaded if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    bad += sorted(n for n in loaded if n.startswith("curvechat.server") and n not in SERVER_ALLOWED)
    assert bad == []


def test_the_page_is_self_contained() -> None:
    root = resources.files("curvechat.monitor") / "static"
    html = (root / "index.html").read_text()
    assert 'src="static/shared.js"' in html and 'src="static/monitor.js"' in html
    assert "<script>" not in html and "style=" not in html  # nothing inline: the CSP allows none
    shared = (resources.files("curvechat.dashboard") / "static" / "shared.js").read_text()
    for text in (
        html,
        (root / "monitor.js").read_text(),
        (root / "monitor.css").read_text(),
        shared,
    ):
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "")
        assert "https://" not in text and "//cdn" not in text
