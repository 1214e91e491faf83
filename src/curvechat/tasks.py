"""Stopping a long-lived object's background task.

What it is for: many parts run one task for their lifetime (a probe, a
sampler, a guard) and stop it the same way: cancel it and wait until it is
gone, without the stop failing because of how the task ended.

It must never start a task nor swallow a failure unseen: a task that had
died of a bug is logged when it is stopped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("curvechat")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait for it to end.

    Only the task's own cancellation is taken: if the caller is cancelled
    while it waits (a stop step's deadline ran out because the task does not
    end), that cancellation goes on to the caller. (Awaiting the task and
    catching CancelledError could not tell the two apart, and swallowed the
    caller's deadline.)"""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task %s had failed",
            task.get_name(),
            exc_info=task.exception(),
        )
