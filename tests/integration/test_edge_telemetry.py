"""Telemetry to a real InfluxDB 1.x: downsampled series, and no gap when InfluxDB was down."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.broker import Mosquitto
from bus.influx import Influxd
from tests.conftest import wait_for
from tests.integration.edge_support import GATEWAY, SITE, Recorder, make_agent, running
from wire import Reading, topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GAS = "gas-b1-101"


def telemetry_yaml(influxd: Influxd) -> str:
    return (
        f"telemetry: {{url: '{influxd.url}', database: anmin, interval_s: 1, flush_s: 0.2,"
        " buffer_max_mb: 5}\n"
    )


def series(result: dict[str, Any]) -> list[list[Any]]:
    found = result["results"][0].get("series")
    return [] if not found else list(found[0]["values"])


async def publish_for(publisher: Recorder, seconds: float, first_seq: int) -> int:
    """Publish a reading every 50 ms for ``seconds``; return the next seq."""
    topic = topics.reading(SITE, GATEWAY, GAS)
    seq = first_seq
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        reading = Reading(
            device=GAS, seq=seq, ts=datetime.now(UTC), values={"gas_lel": 0.5 + seq % 3}
        )
        await publisher.link.publish(topic, msgspec.json.encode(reading), qos=1)
        seq += 1
        await asyncio.sleep(0.05)  # the device's reporting rate, not a wait for a result
    return seq


async def test_series_survive_an_influxdb_outage_without_a_gap(
    mosquitto: Mosquitto, influxd: Influxd, tmp_path: Path
) -> None:
    agent = make_agent(mosquitto.broker, tmp_path / "edge", extra=telemetry_yaml(influxd))
    assert agent.telemetry is not None
    telemetry = agent.telemetry
    publisher = Recorder(mosquitto.broker, client_id="test-device")
    count_query = f"SELECT sum(\"count\") FROM sensor WHERE device = '{GAS}'"
    # The downsampler is the loop's alone: taken from a worker thread, a reading landing in a
    # window being taken could be lost (and making line protocol there held the loop up).
    threads: dict[str, set[int]] = {}
    sampler = telemetry.downsampler
    for name in ("add", "ended", "points"):
        method = getattr(sampler, name)

        def spy(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            threads.setdefault(_name, set()).add(threading.get_ident())
            return _method(*args, **kwargs)

        setattr(sampler, name, spy)
    async with running(agent.run(), publisher.link.run()):
        assert await agent.local.wait_connected(10)
        assert await publisher.link.wait_connected(10)
        seq = await publish_for(publisher, 2.0, 0)
        await wait_for(lambda: bool(series(influxd.query(count_query, "anmin"))), what="points")

        influxd.stop()
        seq = await publish_for(publisher, 3.0, seq)
        await wait_for(lambda: telemetry.buffer.depth() > 0, what="batches buffered on disk")
        influxd.start()
        seq = await publish_for(publisher, 1.0, seq)
        await wait_for(lambda: agent.ingest.counters["readings"] == seq, what="every reading")
    # Stopping the agent flushed the last open windows; the buffer is empty.
    assert telemetry.buffer.depth() == 0
    [[_, total]] = series(influxd.query(count_query, "anmin"))
    assert total == seq, "every reading is counted in exactly one window"
    windows = series(
        influxd.query(
            f"SELECT count(\"mean\") FROM sensor WHERE device = '{GAS}' GROUP BY time(1s) fill(0)",
            "anmin",
        )
    )
    counts = [c for _, c in windows]
    # Trim the edges (a partial first/last second); in between no second may be missing.
    inner = counts[1:-1]
    assert inner and all(c == 1 for c in inner), counts
    loop_thread = {threading.get_ident()}
    assert threads == dict.fromkeys(("add", "ended", "points"), loop_thread), (
        "the downsampler was used off the agent's loop (or not at all)"
    )
    gateway = series(influxd.query("SELECT last(outbox_depth) FROM gateway", "anmin"))
    assert gateway, "the gateway's own health series is written too"
    agent.close()
