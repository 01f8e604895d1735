"""Stopping background tasks for sure (every user of MqttLink needs it)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


def reraise_lost_cancel() -> None:
    """Raise CancelledError if this task was asked to stop and the request was lost on the way.

    On Python 3.11 ``asyncio.wait_for``, which aiomqtt uses for every connect, subscribe and
    publish, returns the result when a cancellation races it, and the request is gone: a loop
    that was publishing then runs on, and a TaskGroup waiting for it never ends (seen as a hung
    test). ``Task.cancelling()`` still counts the request, so check it after such an await. Our
    own code uses ``asyncio.timeout`` instead, which does not lose it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
