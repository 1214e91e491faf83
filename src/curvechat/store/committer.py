"""Group commit for `Store.append_messages`, shared by every backend.

What it is for: many tasks append messages at once; committing each
caller's batch on its own would cost one fsync (or one Raft round) per
caller. The `GroupCommitter` queues the callers' batches and one committer
task hands everything queued (up to ``batch_max`` messages, but always at
least one whole caller batch) to the backend's ``commit`` function at once,
then resolves each caller with its own outcome.

The rules it keeps, whatever the backend:

* Order: batches are committed in the order they were queued (`submit` is
  synchronous, so a caller that submits A before B gets A committed first);
  groups are committed one at a time.
* A caller is resolved only after ``commit`` returned, i.e. after the
  backend reported the group durable.
* Each caller gets its own outcome: ``commit`` returns one per batch, a
  list of acks or a `StoreError` (e.g. NoSuchRoom) that fails that caller
  only. An exception raised by ``commit`` fails every caller of that group
  (each with an exception of its own) and no other: the next group is
  committed as usual.
* A caller that gave up (its future cancelled) before its group was taken
  is skipped. If the committer task itself is cancelled (the loop is going
  away) the callers still queued are cancelled, not told "nothing changed".

What it must never do: touch a database or the network itself, reorder
batches, resolve a caller before ``commit`` returned, or let one caller's
failure leak into another group.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from curvechat.store.base import Committed, NewMessage, StoreError, StoreRefused, StoreUnavailable

__all__ = ["CommitFn", "GroupCommitter", "Outcome"]

#: What ``commit`` returns for one caller batch: its acks, or the error for that caller.
Outcome = list[Committed] | StoreError
#: The backend's group commit: one outcome per batch, in order; raises if the whole group failed.
CommitFn = Callable[[list[Sequence[NewMessage]]], Awaitable[list[Outcome]]]


@dataclass(slots=True)
class _Pending:
    batch: Sequence[NewMessage]
    future: asyncio.Future[list[Committed]]


class GroupCommitter:
    """Queues caller batches and commits them in groups (see the module docstring)."""

    def __init__(self, commit: CommitFn, *, batch_max: int, name: str) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self.batch_max = batch_max
        self._commit = commit
        self._name = name
        self._queue: collections.deque[_Pending] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Caller batches waiting for a group."""
        return len(self._queue)

    def submit(self, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        """Queue `batch` now (no await) and return the future of its acks.

        The caller must not submit an empty batch. Batches submitted one
        after another are committed in that order."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Committed]] = loop.create_future()
        self._queue.append(_Pending(tuple(batch), future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=self._name)
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far was committed (or failed).

        Never raises the committer's outcome and never cancels it, even if
        the caller of `drain` is cancelled."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task})

    def _take_group(self) -> list[_Pending]:
        """Whole caller batches from the queue, up to batch_max messages (at least one)."""
        group: list[_Pending] = []
        count = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the caller gave up before the commit: skip it
                self._queue.popleft()
                continue
            if group and count + len(pending.batch) > self.batch_max:
                break
            self._queue.popleft()
            group.append(pending)
            count += len(pending.batch)
        return group

    async def _run(self) -> None:
        """The committer: one group at a time while callers are queued."""
        group: list[_Pending] = []
        try:
            while self._queue:
                group = self._take_group()
                if not group:
                    break
                try:
                    outcomes = await self._commit([p.batch for p in group])
                except Exception as exc:
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(_fresh(exc))
                    group = []
                    continue
                for pending, outcome in zip(group, outcomes, strict=True):
                    if pending.future.done():
                        continue
                    if isinstance(outcome, StoreError):
                        pending.future.set_exception(outcome)
                    else:
                        pending.future.set_result(outcome)
                group = []
        finally:
            # Only with work left when this task is cancelled: whether that work
            # was committed is unknown, so the callers are cancelled.
            for pending in [*group, *self._queue]:
                pending.future.cancel()
            self._queue.clear()


def _fresh(exc: Exception) -> Exception:
    """An exception of its own for each caller (tracebacks are per raise)."""
    error: Exception
    if isinstance(exc, StoreRefused):
        error = StoreRefused(exc.code, str(exc))
    elif isinstance(exc, StoreUnavailable):
        error = StoreUnavailable(str(exc))
    else:
        return exc
    error.__cause__ = exc.__cause__
    return error
