"""Privacy by design (DESIGN.md, principle 5): raw elder-care readings never leave the gateway.

An edge agent with telemetry gets wearable, PIR and bed readings with distinctive values; in
the real InfluxDB afterwards, no elder-care series carries a device or unit tag, no raw value
is stored at all (private series hold only count and mean over at least k=3 devices), a kind
with a single device in the building writes nothing, and the edge has made its retention
policy. The same proof for the hub's database: tests/integration/hub/test_privacy_hub_db.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.broker import Mosquitto
from bus.influx import Influxd
from edge import EdgeAgent, parse
from edge.config import PRIVATE_KINDS
from edge.telemetry import InfluxWriter, TelemetryBuffer
from tests.conftest import wait_for
from tests.integration.edge_support import BUILDING, GATEWAY, SITE, Recorder, running
from wire import Reading, topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Distinctive values: nothing else in the database can equal them by chance.
HEART = {"watch-101": 173.125, "watch-102": 47.625, "watch-103": 66.25}
SPO2 = 91.375
DOOR = 0.0  # one door contact in the building: fewer than k devices, so nothing is written
GAS_VALUE = 2.875  # a gas sensor is not private: its series keeps its device (the control)
READINGS: dict[str, dict[str, float]] = {
    "watch-101": {"heart_rate_bpm": HEART["watch-101"], "spo2_pct": SPO2},
    "watch-102": {"heart_rate_bpm": HEART["watch-102"]},
    "watch-103": {"heart_rate_bpm": HEART["watch-103"]},
    "pir-101": {"motion": 1.0},
    "pir-102": {"motion": 0.0},
    "pir-103": {"motion": 1.0},
    "bed-101": {"bed_occupied": 1.0},
    "bed-102": {"bed_occupied": 0.0},
    "bed-103": {"bed_occupied": 1.0},
    "door-101": {"contact_open": DOOR},
    "gas-101": {"gas_lel": GAS_VALUE},
}
RAW = {*HEART.values(), SPO2}


def config_yaml(mosquitto: Mosquitto, influxd: Influxd, data_dir: Path) -> str:
    return f"""\
site: {SITE}
gateway: {GATEWAY}
building: {BUILDING}
data_dir: {data_dir}
broker: {{host: {mosquitto.broker.host}, port: {mosquitto.broker.port}}}
devices:
  - {{id: watch-101, kind: wearable, unit: "101", resident: r-101}}
  - {{id: watch-102, kind: wearable, unit: "102", resident: r-102}}
  - {{id: watch-103, kind: wearable, unit: "103", resident: r-103}}
  - {{id: pir-101, kind: pir, unit: "101", resident: r-101}}
  - {{id: pir-102, kind: pir, unit: "102", resident: r-102}}
  - {{id: pir-103, kind: pir, unit: "103", resident: r-103}}
  - {{id: bed-101, kind: bed, unit: "101", resident: r-101}}
  - {{id: bed-102, kind: bed, unit: "102", resident: r-102}}
  - {{id: bed-103, kind: bed, unit: "103", resident: r-103}}
  - {{id: door-101, kind: door, unit: "101", resident: r-101}}
  - {{id: gas-101, kind: gas, unit: "101"}}
telemetry: {{url: '{influxd.url}', database: anmin, interval_s: 60, flush_s: 0.2,
             retention_days: 30}}
heartbeat_s: 1
"""


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of every series of an InfluxQL answer, as column -> value."""
    out = []
    for found in result["results"][0].get("series") or []:
        for values in found["values"]:
            row = dict(zip(found["columns"], values, strict=True))
            row.update(found.get("tags") or {})
            out.append(row)
    return out


async def test_raw_elder_care_values_never_reach_influxdb(
    mosquitto: Mosquitto, influxd: Influxd, tmp_path: Path
) -> None:
    agent = EdgeAgent(parse(config_yaml(mosquitto, influxd, tmp_path / "edge")))
    devices = Recorder(mosquitto.broker, client_id="test-devices")
    sent = 0
    async with running(agent.run(), devices.link.run()):
        assert await agent.local.wait_connected(10) and await devices.link.wait_connected(10)
        # Every reading in one 60 s window: start clear of a window's end (waits < 10 s).
        into_window = datetime.now(UTC).timestamp() % 60
        if into_window > 50:
            await asyncio.sleep(60 - into_window)
        for seq in range(3):
            for device, values in READINGS.items():
                reading = Reading(device=device, seq=seq, ts=datetime.now(UTC), values=values)
                topic = topics.reading(SITE, GATEWAY, device)
                await devices.link.publish(topic, msgspec.json.encode(reading), qos=1)
                sent += 1
        await wait_for(lambda: agent.ingest.counters["readings"] == sent, what="every reading")
    # Stopping the agent flushed every open window to InfluxDB.
    assert agent.telemetry is not None and agent.telemetry.buffer.depth() == 0
    agent.close()

    series = [str(row["key"]) for row in rows(influxd.query("SHOW SERIES", "anmin"))]
    private = [key for key in series if any(f"kind={kind}" in key for kind in PRIVATE_KINDS)]
    assert {"kind=wearable", "kind=pir", "kind=bed"} <= {
        part for key in private for part in key.split(",")
    }, f"the per-building aggregates are written: {series}"
    assert [key for key in private if "device=" in key or "unit=" in key] == []
    assert not any("kind=door" in key for key in series), "one door: fewer than k devices"
    assert agent.telemetry.downsampler.suppressed >= 1
    assert any("kind=gas" in key and "device=gas-101" in key for key in series), (
        "the control: a gas sensor's series keeps its device"
    )

    # Every point of every measurement: no raw elder-care value next to a device or a unit.
    points = rows(influxd.query("SELECT * FROM /.*/ GROUP BY *", "anmin"))
    tied = [p for p in points if (p.get("device") or p.get("unit")) and RAW & set(p.values())]
    assert tied == [], tied
    wearable = [p for p in points if p.get("kind") == "wearable"]
    assert wearable and all(not p.get("device") and not p.get("unit") for p in wearable)
    # Private series hold only count and mean: no raw value is stored anywhere, tied or not.
    private_points = [p for p in points if p.get("kind") in PRIVATE_KINDS]
    assert all(p.get(f) is None for p in private_points for f in ("min", "max", "last"))
    assert not RAW & {v for p in points for v in p.values()}, "a raw value is in InfluxDB"
    heart = [p for p in wearable if p.get("metric") == "heart_rate_bpm"]
    assert heart and {p["count"] for p in heart} == {9}  # 3 readings x 3 watches, one window

    # The edge made its retention policy: 30 days, the database's default.
    policies = rows(influxd.query("SHOW RETENTION POLICIES ON anmin"))
    [anmin] = [p for p in policies if p["name"] == "anmin"]
    assert anmin["default"] is True and anmin["duration"] == "720h0m0s"


def test_the_edge_sets_and_changes_its_retention_policy(influxd: Influxd, tmp_path: Path) -> None:
    buffer = TelemetryBuffer(tmp_path / "telemetry.sqlite3", max_bytes=1_000_000)
    writer = InfluxWriter(influxd.url, "anmin", buffer)
    try:
        assert writer.ensure_retention(30) is True
        assert writer.ensure_retention(7) is True  # exists with another duration: altered
        policies = rows(influxd.query("SHOW RETENTION POLICIES ON anmin"))
        [anmin] = [p for p in policies if p["name"] == "anmin"]
        assert anmin["duration"] == "168h0m0s" and anmin["default"] is True
        # A database that does not exist is refused, said once, and counted.
        missing = InfluxWriter(influxd.url, "no-such-db", buffer)
        assert missing.ensure_retention(7) is False
        assert missing.counters["retention_errors"] == 1
        # Nobody listening: try again later.
        assert InfluxWriter("http://127.0.0.1:9", "anmin", buffer).ensure_retention(7) is None
    finally:
        buffer.close()
