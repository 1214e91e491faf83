"""The monitor's background work, as asyncio tasks around the `MonitorView`:

* discovery: reads the node source (every `DISCOVER_S`, every second while
  it fails or lists nothing) and starts a poll task for each new node. A
  node that drops out of the list is kept and polled on (a node killed in a
  cluster drops out of the registry when its lease expires: that is an
  outage, not a departure); it is forgotten when it has been out of the
  list and down for `forget_after_s` (at once for a list given on the
  command line, which the operator changed).
* one poll task per node: `/api/state` every `interval` seconds, the
  result handed to the view with the time.
* saving: the samples and the timeline go to the `Archive` every `SAVE_S`
  seconds (in a worker thread), and once more on `stop`.

A failure of any of them is logged and retried: the monitor must keep
running whatever the nodes, etcd or the disk do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from curvechat.monitor.archive import Archive
from curvechat.monitor.poller import NodePoller, PollFailure
from curvechat.monitor.sources import NodeSource, SourceUnavailable, UrlList
from curvechat.monitor.timeline import Health
from curvechat.monitor.view import MonitorView

log = logging.getLogger("curvechat.monitor")

DISCOVER_S = 5.0
SAVE_S = 2.0
PRUNE_S = 60.0
TIMELINE_SAVE_S = 30.0  # the timeline is saved at once when it changes, else this often
FORGET_AFTER_S = 24 * 3600.0  # for a registry: out of it and down this long


def now_ms() -> int:
    return int(time.time() * 1000)


class Watcher:
    def __init__(
        self,
        view: MonitorView,
        source: NodeSource,
        poller: NodePoller,
        archive: Archive,
        *,
        interval: float = 1.0,
        forget_after_s: float | None = None,
    ) -> None:
        self.view = view
        self.source = source
        self.poller = poller
        self.archive = archive
        self.interval = interval
        if forget_after_s is None:
            forget_after_s = 0.0 if isinstance(source, UrlList) else FORGET_AFTER_S
        self.forget_after_s = forget_after_s
        self.source_error = ""
        self.listed_once = False
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._saved_seq = -1
        self._saved_at = 0.0
        self._pruned_at = 0.0

    def about(self) -> dict[str, Any]:
        return {"source": self.source.description, "source_error": self.source_error}

    def start(self) -> None:
        if self.forget_after_s > 0:
            # Known from an earlier run: watched at once, even if the registry
            # does not answer. (A list on the command line says it all.)
            for url in self.view.nodes:
                self._watch(url)
        self._tasks = [
            asyncio.create_task(self._discover_loop(), name="monitor-discover"),
            asyncio.create_task(self._save_loop(), name="monitor-save"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._polls.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self._polls = [], {}
        await self.save(final=True)

    # --- discovery ------------------------------------------------------------------
    async def discover(self) -> None:
        """Read the source once and act on its list."""
        at = now_ms()
        try:
            urls = await self.source.urls()
        except SourceUnavailable as exc:
            if str(exc) != self.source_error:
                log.warning("%s", exc)
            self.source_error = str(exc)
            return
        if self.source_error:
            log.info("the %s answers again", self.source.description)
        self.source_error = ""
        self.listed_once = True
        for url in urls:
            self.view.add_node(url, source=self.source.description)
            self._watch(url)
        for url, entry in list(self.view.nodes.items()):
            if url in urls:
                continue
            self.view.unlisted(url, at)
            track = self.view.timeline.tracks.get(url)
            out_for = (at - (entry.unlisted_since or at)) / 1000
            down = track is None or track.health != Health.UP
            if self.forget_after_s == 0 or (out_for >= self.forget_after_s and down):
                why = f"not in the {self.source.description}"
                self._unwatch(url)
                self.view.forget(url, at, why)
                await asyncio.to_thread(self.archive.forget, url)

    async def _discover_loop(self) -> None:
        while True:
            try:
                await self.discover()
            except Exception:
                log.exception("reading the node list failed")
            quick = self.source_error or not self.view.nodes
            await asyncio.sleep(self.interval if quick else DISCOVER_S)

    # --- polling ------------------------------------------------------------------------
    def _watch(self, url: str) -> None:
        if url not in self._polls:
            self._polls[url] = asyncio.create_task(self._poll_loop(url), name=f"monitor-poll {url}")

    def _unwatch(self, url: str) -> None:
        task = self._polls.pop(url, None)
        if task is not None:
            task.cancel()

    async def poll(self, url: str) -> None:
        """Poll `url` once and tell the view."""
        result = await self.poller.poll(url, self.view.last_sample_t(url))
        at = now_ms()
        if isinstance(result, PollFailure):
            events = self.view.failed(url, at, result.error)
        else:
            events = self.view.answered(url, at, result)
        for event in events:
            log.log(
                logging.WARNING if event.level != "info" else logging.INFO,
                "%s",
                event.detail,
            )

    async def _poll_loop(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.poll(url)
            except Exception:  # a bug: say so, and keep watching
                log.exception("polling %s failed", url)
            next_at = max(next_at + self.interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    # --- saving ---------------------------------------------------------------------------
    async def save(self, *, final: bool = False) -> None:
        samples = self.view.take_unsaved()
        timeline = self.view.timeline
        clock = time.monotonic()
        keep_timeline = final or (
            timeline.seq != self._saved_seq or clock - self._saved_at >= TIMELINE_SAVE_S
        )
        document = timeline.to_json() if keep_timeline else None
        prune = final or clock - self._pruned_at >= PRUNE_S
        prune_before = now_ms() - int(self.view.history_s * 1000) if prune else None
        if not samples and document is None and prune_before is None:
            return
        await asyncio.to_thread(self.archive.save, samples, document, prune_before=prune_before)
        if document is not None:
            self._saved_seq, self._saved_at = int(document["seq"]), clock
        if prune:
            self._pruned_at = clock

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_S)
            try:
                await self.save()
            except Exception:  # a full disk must not stop the monitoring
                log.exception("saving the history failed; retrying")
