"""Helpers for tests that run an edge agent against a real broker."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bus import Broker, Incoming, MqttLink, NotConnected
from bus.tasks import stop
from edge import EdgeAgent, parse
from wire import Reading

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


def gas_reading(seq: int, lel: float, device: str = "gas-b1-101") -> bytes:
    """A gas sensor's reading, stamped now."""
    value = Reading(device=device, seq=seq, ts=datetime.now(UTC), values={"gas_lel": lel})
    return msgspec.json.encode(value)


async def publish_surely(
    link: MqttLink, topic: str, payload: bytes, *, within_s: float = 60.0
) -> None:
    """Publish at QoS 1 until the broker acknowledges it, across a broker restart; a broker
    that does not come back within ``within_s`` fails the test rather than hanging it."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await link.publish(topic, payload, qos=1, timeout=2)
            return
        except NotConnected:
            if time.monotonic() > deadline:
                raise AssertionError(f"no broker to publish {topic} to for {within_s}s") from None
            await link.wait_connected(min(10.0, max(0.1, deadline - time.monotonic())))


def start_edge(config: Path) -> subprocess.Popen[bytes]:
    """``anmin edge run`` in its own process, as an installer runs it (stderr kept)."""
    return subprocess.Popen(
        [sys.executable, "-m", "anmin", "edge", "run", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


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
