"""Stopping background tasks for sure (every user of MqttLink needs it)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def stop(task: asyncio.Task[None], *, retry_s: float = 0.5) -> None:
    """Cancel ``task`` and wait until it has ended, without swallowing our own cancellation.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` (which aiomqtt
    uses while connecting) drops a cancellation that races with the awaited result, and the task
    then runs on. So cancel again until it is done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=retry_s)
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s had failed", task.get_name(), exc_info=task.exception())
