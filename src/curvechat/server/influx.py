"""Push the node's metrics to InfluxDB (1.x HTTP write API, line protocol).

Every `interval` seconds the whole Prometheus registry of the node is written
as one batch: each sample becomes a point whose measurement is the sample's
name (`curvechat_messages_accepted_total`, `…_bucket` with an `le` tag), its
labels become tags, the node's name is the `node` tag, and the number is the
field `value`, stamped in milliseconds.

`--influx URL` takes either a full write URL
(`http://127.0.0.1:8086/write?db=curvechat`) or a base URL
(`http://127.0.0.1:8086`) with the database given apart (`--influx-db`).

A slow or dead InfluxDB must never slow the node: writes time out, failures
are logged once per outage (and put in the event log), and the next interval
simply tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from prometheus_client import CollectorRegistry

from curvechat.dashboard.events import EventLog

log = logging.getLogger("curvechat.influx")

DEFAULT_DB = "curvechat"
DEFAULT_INTERVAL_S = 10.0
WRITE_TIMEOUT_S = 5.0


def write_url(url: str, db: str | None = None) -> str:
    """The HTTP write endpoint for `url` (a write URL or a base URL), with
    `db` (if given, or `curvechat` if the URL names none) and ms precision."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/write"):
        path += "/write"
    query = dict(parse_qsl(parts.query))
    if db:
        query["db"] = db
    query.setdefault("db", DEFAULT_DB)
    query["precision"] = "ms"
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", r"\,").replace(" ", r"\ ")


def line_protocol(registry: CollectorRegistry, node: str, t_ms: int) -> str:
    """All finite samples of `registry` as InfluxDB line protocol, one point a line."""
    lines: list[str] = []
    for family in registry.collect():
        for s in family.samples:
            if not math.isfinite(s.value):
                continue
            tags = {"node": node, **s.labels}
            tag_text = ",".join(
                f"{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v != ""
            )
            lines.append(f"{_escape_measurement(s.name)},{tag_text} value={s.value!r} {t_ms}")
    return "\n".join(lines) + "\n"


class InfluxPusher:
    def __init__(
        self,
        registry: CollectorRegistry,
        url: str,
        *,
        node: str,
        db: str | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        events: EventLog | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the push interval must be positive")
        self.registry = registry
        self.url = write_url(url, db)
        self.node = node
        self.interval = interval
        self.events = events
        self.pushes = 0
        self.failures = 0
        self._failing = False
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WRITE_TIMEOUT_S))
        self._task = asyncio.create_task(self._run(), name="influx-push")

    async def stop(self) -> None:
        """Stop pushing, after one last push (bounded by the write timeout)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self.push()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            await self.push()
            await asyncio.sleep(self.interval)

    async def push(self) -> bool:
        """One write of the current metrics; True if InfluxDB took it."""
        assert self._session is not None
        body = line_protocol(self.registry, self.node, int(time.time() * 1000))
        try:
            async with self._session.post(self.url, data=body.encode()) as resp:
                if resp.status >= 300:
                    text = (await resp.text())[:300]
                    raise OSError(f"HTTP {resp.status}: {text.strip()}")
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning("pushing metrics to InfluxDB failed: %s", exc or type(exc).__name__)
                if self.events is not None:
                    self.events.add(
                        "influx_unavailable", f"InfluxDB push failed: {exc}", level="warning"
                    )
            return False
        self.pushes += 1
        if self._failing:
            self._failing = False
            log.info("pushing metrics to InfluxDB works again")
            if self.events is not None:
                self.events.add("influx_available", "InfluxDB push works again")
        return True
