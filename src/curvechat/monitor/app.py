"""`curvechat monitor`: the process. It loads what an earlier run kept
(`Archive`), starts watching (`Watcher`) and serving the page (`MonitorWeb`
behind an `HttpGuard`, with its own token in `DATA/http.token`), prints
where to open it, and runs until SIGINT/SIGTERM, then saves and stops.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sqlite3
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from curvechat.monitor.archive import Archive
from curvechat.monitor.poller import NodePoller
from curvechat.monitor.sources import NodeSource
from curvechat.monitor.timeline import Timeline
from curvechat.monitor.view import MonitorView
from curvechat.monitor.watcher import Watcher, now_ms
from curvechat.monitor.web import MonitorWeb
from curvechat.protocol.errors import DataDirError
from curvechat.server.httpguard import TOKEN_FILE, HttpGuard, listen, load_or_create_token
from curvechat.server.httpload import IDLE_S

log = logging.getLogger("curvechat.monitor")

DEFAULT_HTTP = "127.0.0.1:7790"


STOP_STEP_S = 8.0


def load_view(archive: Archive, history_s: float, interval: float) -> MonitorView:
    """The view as the last run left it (or a new one), with this run begun."""
    at = now_ms()
    document, samples = archive.load(at - int(history_s * 1000))
    timeline = Timeline()
    if document is not None:
        try:
            timeline = Timeline.from_json(document)
        except ValueError as exc:
            log.warning("the kept timeline is unusable (%s); starting a new one", exc)
    timeline.resume(at)
    view = MonitorView(timeline, history_s=history_s, interval_s=interval)
    view.load(samples)
    return view


def _base_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def run_monitor(
    data_dir: Path,
    source: NodeSource,
    *,
    http: str = DEFAULT_HTTP,
    node_token: str = "",
    http_hosts: Sequence[str] = (),
    http_token_file: Path | None = None,
    http_require_token: bool = False,
    interval: float = 1.0,
    history_s: float = 3600.0,
    ready: asyncio.Event | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = load_or_create_token(http_token_file or data_dir / TOKEN_FILE)
        archive = Archive(data_dir)
        archive.open()
    except (OSError, sqlite3.Error) as exc:
        raise DataDirError(f"cannot use the data directory {data_dir}: {exc}") from exc
    session: aiohttp.ClientSession | None = None
    watcher: Watcher | None = None
    runner: web.AppRunner | None = None
    try:
        view = await asyncio.to_thread(load_view, archive, history_s, interval)
        session = aiohttp.ClientSession(
            # Nodes answer uncompressed: a compressed answer could unpack to far
            # more than the bytes the poller counts (poller.MAX_BYTES).
            auto_decompress=False,
            headers={"Accept-Encoding": "identity"},
        )
        watcher = Watcher(view, source, NodePoller(session, node_token), archive, interval=interval)
        about = {"boot": secrets.token_hex(8), "started_at": now_ms()}
        known = len(view.nodes)  # from an earlier run
        watcher.start()
        guard = _guard(http, token, http_hosts, http_require_token)
        pages = MonitorWeb(view, lambda: {**about, **watcher.about()})
        runner = web.AppRunner(pages.app(guard), access_log=None, keepalive_timeout=IDLE_S)
        await runner.setup()
        host, _, port = http.rpartition(":")
        bind_host = host.strip("[]") or "127.0.0.1"
        bound = await listen(runner, bind_host, int(port))
        link = _base_url(bind_host, bound) + (f"#token={token}" if guard.require_token else "")
        print(
            f"curvechat monitor ready: nodes from the {source.description}"
            + (f" ({known} known from before)" if known else ""),
            flush=True,
        )
        print(f"monitor: {link}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        print("stopping…", flush=True)
    finally:
        if runner is not None:
            await _bounded("http", runner.cleanup())
        if watcher is not None:
            await _bounded("watching", watcher.stop())
        if session is not None:
            await _bounded("http client", session.close())
        await _bounded("node source", source.close())
        archive.close()


def _guard(http: str, token: str, hosts: Sequence[str], require: bool) -> HttpGuard:
    host = http.rpartition(":")[0].strip("[]") or "127.0.0.1"
    return HttpGuard.for_bind(
        host, token, extra_hosts=hosts, require_token=require, serves="monitor"
    )


async def _bounded(what: str, step: Coroutine[Any, Any, None]) -> None:
    """One step of shutdown, given STOP_STEP_S at most."""
    try:
        async with asyncio.timeout(STOP_STEP_S):
            await step
    except TimeoutError:
        log.warning("stopping: %s did not finish within %g s; going on", what, STOP_STEP_S)
