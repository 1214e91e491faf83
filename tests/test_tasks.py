"""Stopping a background task (curvechat/tasks.py `cancel_and_wait`), and
the deadline of a stop step around it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from curvechat.tasks import cancel_and_wait


async def test_a_task_is_cancelled_and_waited_for() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(None)  # nothing to stop


async def test_a_task_that_had_failed_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise ValueError("a bug")

    task = asyncio.create_task(broken(), name="broken")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="curvechat"):
        await cancel_and_wait(task)
    assert "background task broken had failed" in caplog.text
    assert "a bug" in caplog.text


async def test_the_callers_deadline_is_not_swallowed() -> None:
    """A task that does not end when cancelled (it swallows the cancel, as
    Python 3.11's wait_for could): the stop step's deadline must still end
    the wait, as a TimeoutError, not return as if the task had stopped."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue  # swallowed

    async def stop_step() -> None:
        async with asyncio.timeout(0.2):
            await cancel_and_wait(task)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    step = asyncio.create_task(stop_step())
    await asyncio.wait({step}, timeout=3)  # (a swallowed deadline would wait for ever)
    try:
        assert step.done(), "the stop step's deadline was swallowed"
        assert isinstance(step.exception(), TimeoutError)
    finally:
        release.set()
        task.cancel()
        await asyncio.wait({task, step})
