"""The engine's worker: what the node pushes, handled in order.

The connection hands each push over as it is read (`put`); it waits in a
bounded queue (`pushqueue.py`) for the one task that handles pushes, a
burst at a time, under the shared lock, so that they apply in the order
the node sent them and between commands, never in the middle of one. What
the queue dropped, the worker fetches by a sync once it has drained it.
A step that fails is told or logged and the worker goes on: what a push
did not store is found again as a gap at the next push or sync.

This module must never stop on a push it cannot handle, nor decide what a
push means: the sync and the trust core do.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable

from curvechat.client import events as ev
from curvechat.client.cache import CacheRefusals
from curvechat.client.errors import ClientError, NotConnected, RequestTimeout
from curvechat.client.parts import Parts
from curvechat.client.pushqueue import PUSH_BURST, PushQueue, bursts
from curvechat.client.sync import Sync
from curvechat.protocol import messages as m

log = logging.getLogger("curvechat.client")


class PushWorker:
    def __init__(self, parts: Parts, sync: Sync, refusals: CacheRefusals) -> None:
        self.p = parts
        self.sync = sync
        self.jobs = PushQueue()
        self.refusals = refusals
        """Shared with the sync after connecting: a full disk is told once."""

    def put(self, msg: m.AnyReply) -> None:
        """A push, as the connection read it."""
        jobs = self.jobs
        was_full = jobs.overflowed
        if not jobs.put_nowait(msg) and not was_full:  # once until the sync that follows
            log.warning(
                "the push queue is full (%d pushes, %d bytes): pushes are dropped "
                "until it drains, then a sync fetches what they told",
                jobs.qsize(),
                jobs.nbytes,
            )

    async def run(self) -> None:
        while True:
            pushes = [await self.jobs.get()]
            async with self.p.lock:
                # Everything queued meanwhile goes too: a burst, one cache commit per room.
                while not self.jobs.empty() and len(pushes) < PUSH_BURST:
                    pushes.append(self.jobs.get_nowait())
                for burst in bursts(pushes):
                    room = getattr(burst[0], "room", None)
                    await self._step(self.sync.handle_burst(burst), room, "a push")
                if self.jobs.catch_up_due():
                    # Pushes were dropped: fetch what they told, as after a
                    # reconnect. What is dropped from here on needs another.
                    what = "the sync after dropped pushes"
                    if not await self._step(self._catch_up(), None, what):
                        self.jobs.overflowed = True  # again after the next pushes

    async def _catch_up(self) -> None:
        self.p.emit(ev.CaughtUp(await self.sync.full()))

    async def _step(self, step: Awaitable[None], room: str | None, what: str) -> bool:
        """Await one step (a burst, a sync); whether it went through."""
        try:
            await step
            self.refusals.passed()
            return True
        except (NotConnected, RequestTimeout):
            pass  # the next sync after reconnect covers it
        except ClientError as exc:
            self.p.emit(ev.Problem(room, str(exc)))
        except sqlite3.OperationalError as exc:
            # Another process of this home holds the cache (a long write), or
            # the disk is full (told once, `refusals`). What was pushed is
            # fetched again as a gap at the next push or sync.
            log.warning("%s was not stored: the local cache: %s", what, exc)
            self.refusals.refused(exc)
        except Exception:
            log.exception("%s failed", what)
        return False
