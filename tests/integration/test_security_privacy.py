"""Privacy by design (DESIGN.md, principle 5): raw elder-care readings never leave the gateway.

An edge agent with telemetry gets wearable, PIR and bed readings with distinctive values; in
the real InfluxDB afterwards, no elder-care series carries a device or unit tag, and no raw
heart rate sits next to a device. (The same proof for the hub's database belongs with the
hub's privacy work: the hub receives only alert events, see docs/security.md.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.broker import Mosquitto
from bus.influx import Influxd
from edge import EdgeAgent, parse
from edge.telemetry import PRIVATE_KINDS
from tests.conftest import wait_for
from tests.integration.edge_support import BUILDING, GATEWAY, SITE, Recorder, running
from wire import Reading, topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Distinctive values: nothing else in the database can equal them by chance.
HEART = {"watch-101": 173.125, "watch-102": 47.625}
SPO2 = 91.375
GAS_VALUE = 2.875  # a gas sensor is not private: its series keeps its device (the control)
READINGS: dict[str, dict[str, float]] = {
    "watch-101": {"heart_rate_bpm": HEART["watch-101"], "spo2_pct": SPO2},
    "watch-102": {"heart_rate_bpm": HEART["watch-102"]},
    "pir-101": {"motion": 1.0},
    "bed-101": {"bed_occupied": 1.0},
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
  - {{id: pir-101, kind: pir, unit: "101", resident: r-101}}
  - {{id: bed-101, kind: bed, unit: "101", resident: r-101}}
  - {{id: gas-101, kind: gas, unit: "101"}}
telemetry: {{url: '{influxd.url}', database: anmin, interval_s: 1, flush_s: 0.2}}
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
    assert any("kind=gas" in key and "device=gas-101" in key for key in series), (
        "the control: a gas sensor's series keeps its device"
    )

    # Every point of every measurement: no raw elder-care value next to a device or a unit.
    points = rows(influxd.query("SELECT * FROM /.*/ GROUP BY *", "anmin"))
    tied = [p for p in points if (p.get("device") or p.get("unit")) and RAW & set(p.values())]
    assert tied == [], tied
    wearable = [p for p in points if p.get("kind") == "wearable"]
    assert wearable and all(not p.get("device") and not p.get("unit") for p in wearable)
