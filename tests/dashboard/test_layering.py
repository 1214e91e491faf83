"""The dashboard reads nodes only through `NodeProbe`: importing it loads
neither the server, the store, the client nor zmq (checked in a fresh
interpreter, so nothing already imported here can hide a dependency)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("zmq", "curvechat.server", "curvechat.store", "curvechat.client", "nacl")


def test_dashboard_does_not_load_the_server_or_the_store() -> None:
    code = (
        "import json, sys\n"
        "import curvechat.dashboard.routes, curvechat.dashboard.history\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "curvechat.dashboard.routes" in loaded and "aiohttp" in loaded
    bad = sorted(n for n in loaded if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    assert bad == []


def test_static_assets_are_package_data_and_self_contained() -> None:
    from importlib import resources

    root = resources.files("curvechat.dashboard") / "static"
    html = (root / "index.html").read_text()
    js = (root / "dashboard.js").read_text()
    assert 'src="static/dashboard.js"' in html and 'href="static/dashboard.css"' in html
    for text in (html, js, (root / "dashboard.css").read_text()):
        # nothing fetched from elsewhere: no CDN, no absolute URLs to load
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "")
        assert "https://" not in text and "//cdn" not in text
