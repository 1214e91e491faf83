"""Real headless Chromium (driven over the Chrome DevTools Protocol with
aiohttp's websocket client) and a real InfluxDB 1.x, each started on free
loopback ports in a fresh temp directory and always stopped; and a small web
server on another loopback port, as the page of another origin.

Chromium resolves every name under `.test` to 127.0.0.1 (as a DNS
rebinding attacker's name would), so a test can open a node under a name.

Tests that need one skip, saying why, only when its binary is missing
(Debian packages `chromium` and `influxdb`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from support.servers import free_port

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    # Names a rebinding attacker controls, resolved to this machine.
    "--host-resolver-rules=MAP *.test 127.0.0.1",
    # http:// stays http:// (no automatic try of https:// for names).
    "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
)
START_TIMEOUT_S = 30.0


class CdpError(Exception):
    pass


class Page:
    """One browser tab, over a flattened CDP session of the browser's websocket."""

    def __init__(self, browser: Chromium, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    async def call(self, method: str, **params: Any) -> Any:
        return await self.browser.call(method, session_id=self.session_id, **params)

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, condition: str, timeout: float = 20.0, what: str = "") -> None:
        """Wait until the JS expression `condition` is truthy: checked on every
        change of the page's DOM (the dashboard re-renders each poll)."""
        script = f"""new Promise((resolve) => {{
            const ok = () => {{
                try {{ return Boolean({condition}); }} catch (e) {{ return false; }}
            }};
            if (ok()) return resolve(true);
            const obs = new MutationObserver(() => {{
                if (ok()) {{ obs.disconnect(); resolve(true); }}
            }});
            obs.observe(document, {{subtree: true, childList: true, attributes: true,
                                   characterData: true}});
        }})"""
        try:
            async with asyncio.timeout(timeout):
                await self.evaluate(script)
        except TimeoutError:
            text = await self.evaluate("document.body ? document.body.innerText : ''")
            raise AssertionError(
                f"timed out waiting for {what or condition}; the page shows:\n{text[:3000]}"
            ) from None

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The CDP events of this tab so far (method and params)."""
        return self.browser.events.setdefault(self.session_id, [])

    def console(self) -> list[str]:
        """What the tab wrote to its console and log: messages, errors and the
        browser's own reports (failed loads, Content Security Policy refusals)."""
        lines: list[str] = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled":
                args = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                lines.append(f"console.{params['type']}: {' '.join(args)}")
            elif event["method"] == "Log.entryAdded":
                entry = params["entry"]
                lines.append(f"{entry['source']}.{entry['level']}: {entry['text']}")
            elif event["method"] == "Runtime.exceptionThrown":
                lines.append(f"exception: {params['exceptionDetails']}")
        return lines

    async def screenshot(self, width: int = 1440) -> bytes:
        """A PNG of the whole page (the viewport grows to the page's height)."""
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        # Let the page re-render at the new size before the capture.
        await self.evaluate("new Promise((r) => requestAnimationFrame(() => r(true)))")
        reply = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(reply["data"])


class Chromium:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}  # session id -> CDP events

    async def start(self, binary: str) -> None:
        profile = self.root / "profile"
        profile.mkdir(parents=True)
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1440,1000",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.create_task(self._read_stderr(listening)))
        async with asyncio.timeout(START_TIMEOUT_S):
            ws_url = await listening
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=0)
        self._tasks.append(asyncio.create_task(self._read_ws()))

    async def _read_stderr(self, listening: asyncio.Future[str]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.stderr.append(line)
            if line.startswith("DevTools listening on ") and not listening.done():
                listening.set_result(line.split(" on ", 1)[1].strip())
        if not listening.done():
            listening.set_exception(
                RuntimeError("chromium exited:\n" + "\n".join(self.stderr[-30:]))
            )

    async def _read_ws(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" not in data and "sessionId" in data:
                self.events.setdefault(data["sessionId"], []).append(data)
                continue
            fut = self._pending.pop(data.get("id", -1), None)
            if fut is None or fut.done():
                continue  # an event: not needed here
            if "error" in data:
                fut.set_exception(CdpError(str(data["error"])))
            else:
                fut.set_result(data.get("result", {}))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CdpError("the browser closed the connection"))

    async def call(self, method: str, session_id: str | None = None, **params: Any) -> Any:
        assert self._ws is not None
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        message: dict[str, Any] = {"id": rid, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._ws.send_str(json.dumps(message))
        async with asyncio.timeout(30):
            return await fut

    async def new_page(self, width: int = 1440, height: int = 1000) -> Page:
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"])
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        await page.call("Log.enable")
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return page

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    chromium = Chromium(tmp_path / "chromium")
    try:
        await chromium.start(binary)
        yield chromium
    finally:
        await chromium.close()


# --- another origin ----------------------------------------------------------------------

BLANK_PAGE = "<!doctype html><html><head><title>elsewhere</title></head><body></body></html>"


class OtherOrigin:
    """A web server on another loopback port: the page of some other site."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text=BLANK_PAGE, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", page)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@pytest.fixture
async def other_origin() -> AsyncIterator[OtherOrigin]:
    site = OtherOrigin()
    try:
        await site.start()
        yield site
    finally:
        if site.runner is not None:
            await site.runner.cleanup()


# --- InfluxDB ---------------------------------------------------------------------------

INFLUXD_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"""


class InfluxD:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = root / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, binary: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "influxdb.conf"
        config.write_text(
            INFLUXD_CONFIG.format(root=self.root, rpc_port=self.rpc_port, http_port=self.http_port)
        )
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                binary,
                "run",
                "-config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        async with aiohttp.ClientSession() as http:
            # Ready when /ping answers (checked until then, bounded).
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    if self.proc.returncode is not None:
                        raise RuntimeError("influxd exited:\n" + self.log_path.read_text()[-3000:])
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{self.url}/ping") as resp:
                            if resp.status == 204:
                                return
                    await asyncio.sleep(0.05)

    async def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        params = {"q": q, **({"db": db} if db else {})}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}/query", params=params) as resp,
        ):
            assert resp.status == 200, await resp.text()
            result: dict[str, Any] = await resp.json()
            return result

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def influxd(tmp_path: Path) -> AsyncIterator[InfluxD]:
    binary = shutil.which("influxd")
    if binary is None:
        pytest.skip("influxd is not installed (Debian package `influxdb`)")
    server = InfluxD(tmp_path / "influxdb")
    try:
        await server.start(binary)
        yield server
    finally:
        await server.stop()
