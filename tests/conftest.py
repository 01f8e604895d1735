"""Fixtures shared by every test: a Mosquitto of our own, the anyio backend, waiting helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bus.broker import Mosquitto
from bus.influx import Influxd


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto on a free port (never the machine's 1883), stopped after the test."""
    broker = Mosquitto(data_dir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    """A fresh InfluxDB 1.x (Debian's influxd) on free ports, with an ``anmin`` database."""
    server = Influxd(tmp_path / "influxd")
    server.start()
    try:
        server.query("CREATE DATABASE anmin")
        yield server
    finally:
        server.close()


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
