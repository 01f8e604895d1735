"""Helpers for tests that run an edge agent against a real broker."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bus import Broker, Incoming, MqttLink
from bus.tasks import stop
from edge import EdgeAgent, parse

SITE = "s1"
GATEWAY = "gw-1"
BUILDING = "b1"


def edge_config_yaml(
    broker: Broker, data_dir: Path, *, retry_s: float = 0.3, extra: str = ""
) -> str:
    return f"""\
site: {SITE}
gateway: {GATEWAY}
building: {BUILDING}
data_dir: {data_dir}
broker: {{host: {broker.host}, port: {broker.port}}}
devices:
  - {{id: gas-b1-101, kind: gas, unit: "101"}}
  - {{id: spk-b1, kind: speaker}}
rules:
  gas: {{low: 10, high: 25, hold_low_s: 1, hold_high_s: 1, clear_below: 5, hold_clear_s: 5}}
uplink_retry_s: {retry_s}
heartbeat_s: 1
{extra}"""


def make_agent(
    broker: Broker, data_dir: Path, *, retry_s: float = 0.3, extra: str = ""
) -> EdgeAgent:
    return EdgeAgent(parse(edge_config_yaml(broker, data_dir, retry_s=retry_s, extra=extra)))


@asynccontextmanager
async def running(
    *coroutines: Coroutine[Any, Any, None],
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run coroutines as tasks for the body of the block, then stop them all.

    A task that ended with an error while the block ran fails the test: an agent that died
    silently after the last check must not pass.
    """
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield tasks
        died = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        assert not died, f"a task died: {[t.exception() for t in died]!r}"
    finally:
        for task in tasks:
            await _stop_or_fail(task)


async def _stop_or_fail(task: asyncio.Task[None], within_s: float = 30.0) -> None:
    """Stop a task; one that will not end (a lost cancellation, see bus.tasks) fails the test
    with the stacks of every task still running, instead of hanging the whole suite."""
    try:
        async with asyncio.timeout(within_s):
            await stop(task)
    except TimeoutError:
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            other.print_stack(file=stacks)
        raise AssertionError(
            f"task {task.get_name()} did not stop within {within_s}s:\n{stacks.getvalue()}"
        ) from None


class Recorder:
    """An MQTT client that records every message on its subscriptions."""

    def __init__(self, broker: Broker, *filters: str, client_id: str = "test-recorder") -> None:
        self.messages: list[Incoming] = []
        self.link = MqttLink(
            broker,
            client_id=client_id,
            subscriptions=[(f, 1) for f in filters],
            handler=self._record,
        )

    async def _record(self, message: Incoming) -> None:
        self.messages.append(message)

    def on(self, topic: str) -> list[Incoming]:
        return [m for m in self.messages if m.topic == topic]
