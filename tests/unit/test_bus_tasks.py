"""A cancellation that races a result must still stop the task (Python 3.11's wait_for loses it)."""

from __future__ import annotations

import asyncio

import pytest

from bus.tasks import reraise_lost_cancel, stop

pytestmark = pytest.mark.anyio


async def _loop_forever(
    fut_box: list[asyncio.Future[None]], check: bool, rounds: list[int]
) -> None:
    """What a heartbeat or uplink loop does: wait for a confirmation, then go round again."""
    while True:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut_box.append(fut)
        await asyncio.wait_for(fut, timeout=5)  # what aiomqtt does inside publish
        if check:
            reraise_lost_cancel()
        rounds[0] += 1
        if rounds[0] > 3:
            return  # the lost cancellation let it run on


async def _race(check: bool) -> tuple[asyncio.Task[None], list[int]]:
    box: list[asyncio.Future[None]] = []
    rounds = [0]
    task = asyncio.create_task(_loop_forever(box, check, rounds))
    for _ in range(5):
        await asyncio.sleep(0)
        if box:
            break
    # The confirmation and the cancellation land in the same loop pass.
    box[-1].set_result(None)
    task.cancel()
    for _ in range(5):  # let the loop go round: each round needs a fresh result
        await asyncio.sleep(0)
        if task.done():
            break
        if box[-1].done() is False:
            box[-1].set_result(None)
    return task, rounds


async def test_a_lost_cancellation_is_raised_again() -> None:
    task, rounds = await _race(check=True)
    await asyncio.wait([task], timeout=1)
    assert task.cancelled()
    assert rounds[0] == 0


async def test_without_the_check_the_cancellation_is_lost_on_311() -> None:
    """The control: proves the race is real here, so the test above is not vacuous."""
    task, rounds = await _race(check=False)
    await asyncio.wait([task], timeout=1)
    if task.cancelled():
        pytest.skip("this Python's wait_for keeps the cancellation (3.12+)")
    assert rounds[0] > 0


async def test_stop_ends_a_task_that_swallows_one_cancel() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # as a lost cancellation would; the next one ends it
        await asyncio.Event().wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await stop(task, retry_s=0.01)
    assert swallowed.is_set()
    assert task.cancelled()
