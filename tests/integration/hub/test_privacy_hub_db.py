"""Privacy by design (DESIGN.md, principle 5), at the hub: raw elder-care readings never reach
the hub's database, on SQLite and on PostgreSQL.

An edge agent running the elder-care preset gets wearable, PIR and bed readings with
distinctive values, and an SOS press; the hub takes what the edge sends over the real broker.
Afterwards every column of every table of the hub's database is read back and searched for
the raw values and the private metric names. The SOS alarm is the control: it did arrive.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from bus.broker import Mosquitto
from edge import EdgeAgent, parse
from hub.store import Store
from tests.conftest import wait_for
from tests.integration.edge_support import BUILDING, GATEWAY, SITE, Recorder, running
from tests.integration.hub.support import FakeClock, app_for, settings_for
from tests.integration.hub.support import running as hub_running
from wire import Reading, topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Distinctive values, exactly representable in binary so every database prints them alike.
RAW_VALUES = {73.125, 96.375, 58.625, 94.875}
READINGS: list[tuple[str, dict[str, float]]] = [
    ("watch-101", {"heart_rate_bpm": 73.125, "spo2_pct": 96.375}),
    ("watch-102", {"heart_rate_bpm": 58.625, "spo2_pct": 94.875}),
    ("pir-101", {"motion": 1.0}),
    ("bed-101", {"bed_occupied": 1.0}),
]
# Names that exist only in readings (an SOS alert's evidence is {"sos": 1}).
PRIVATE_NAMES = {"heart_rate_bpm", "spo2_pct", "bed_occupied"}


def edge_yaml(mosquitto: Mosquitto, data_dir: Path) -> str:
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
rules: {{include: [elder-care]}}
uplink_retry_s: 0.3
heartbeat_s: 1
"""


def every_cell(database_url: str) -> list[tuple[str, str, str]]:
    """(table, column, text) for every non-null cell of every table, JSON as its text."""
    engine = sa.create_engine(database_url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        cells = []
        with engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in connection.execute(sa.select(table)).mappings():
                    for column, value in row.items():
                        if value is None:
                            continue
                        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
                        cells.append((table.name, column, text))
        return cells
    finally:
        engine.dispose()


def found(cells: list[tuple[str, str, str]], needles: set[str]) -> list[tuple[str, str, str]]:
    return [cell for cell in cells if any(needle in cell[2] for needle in needles)]


async def test_raw_elder_care_values_never_reach_the_hub_database(
    mosquitto: Mosquitto, hub_database: str, clock: FakeClock, tmp_path: Path
) -> None:
    app = app_for(settings_for(mosquitto, hub_database, auth_required=False), clock)
    agent = EdgeAgent(parse(edge_yaml(mosquitto, tmp_path / "edge")))
    devices = Recorder(mosquitto.broker, client_id="test-elder-devices")
    sent = 0
    async with hub_running(app), running(agent.run(), devices.link.run()):
        store: Any = app.state.store
        assert isinstance(store, Store)
        await wait_for(lambda: app.state.link.connected.is_set(), what="the hub's broker link")
        assert await agent.local.wait_connected(10) and await devices.link.wait_connected(10)

        async def publish(device: str, seq: int, values: dict[str, float]) -> None:
            nonlocal sent
            reading = Reading(device=device, seq=seq, ts=datetime.now(UTC), values=values)
            topic = topics.reading(SITE, GATEWAY, device)
            await devices.link.publish(topic, msgspec.json.encode(reading), qos=1)
            sent += 1

        for seq in range(3):
            for device, values in READINGS:
                await publish(device, seq, values)
        # The control: an SOS press is an alarm at once, and it must reach the hub.
        await publish("watch-101", 3, {"sos": 1.0, "heart_rate_bpm": 73.125})
        await wait_for(lambda: agent.ingest.counters["readings"] == sent, what="every reading")
        await wait_for(
            lambda: any(a.kind == "sos" for a in store.alerts()),
            timeout=30,
            what="the SOS alert at the hub",
        )
        await wait_for(lambda: agent.outbox.depth() == 0, timeout=30, what="the hub's acks")
        await wait_for(lambda: store.gateways() != [], timeout=30, what="a heartbeat")
    agent.close()

    cells = every_cell(hub_database)
    tables = {table for table, _, _ in cells}
    assert {"alert_events", "incidents", "gateways"} <= tables, tables
    assert found(cells, {"sos"}), "the control: the SOS alarm is in the hub's database"
    raw = {f"{value:g}" for value in RAW_VALUES} | {repr(value) for value in RAW_VALUES}
    assert found(cells, raw) == [], "a raw elder-care value reached the hub"
    assert found(cells, PRIVATE_NAMES) == [], "a private reading's name reached the hub"
