"""Every dashboard query runs, with its variables substituted, against a real influxd filled
through the real edge telemetry path from a simulated scenario, and returns data of its shape.

The scenario is the sample community's building n1 (every device family it has: gas, CO,
smoke, heat, elder care, lockers, pump, flood, electrical, speakers) with its incidents moved
into a four-minute slice, played over MQTT at 24x into an EdgeAgent configured with those
devices, the shipped rule presets and telemetry to the ``influxd`` fixture.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.broker import Mosquitto
from bus.influx import Influxd
from edge import EdgeAgent
from edge.config import BrokerConfig, DeviceConfig, EdgeConfig, TelemetryConfig
from firmware_sim import community
from firmware_sim.runner import ScenarioRunner, run_start, utc_now
from firmware_sim.scenario import Scenario, load_yaml
from grafana import generate
from rules import RuleSet
from tests.conftest import wait_for
from tests.integration.edge_support import running

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "firmware-sim" / "scenarios" / "sample-community.yaml"
SITE, BUILDING, GATEWAY = "north", "n1", "gw-n1"
DURATION_S = 240.0
SPEED = 24.0  # four simulated minutes in ten seconds
PRESETS = [
    "gas",
    "co-en50291",
    "smoke",
    "heat-a1r",
    "electrical",
    "flood",
    "elder-care",
    "lockers",
    "pump",
    "device-health",
]
# What Grafana puts in place of its own macros, for a dashboard looking at the last 30 min.
MACROS = {"$timeFilter": "time > now() - 30m", "$__interval": "1s"}


def slice_of_the_sample() -> Scenario:
    """The sample community's building n1, its incidents early enough for a short run, and
    malformed pump messages so that rejects have a reason to show."""
    data = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    data["start"] = "2025-03-03T05:00:00+08:00"
    data["duration"] = f"{DURATION_S:.0f}s"
    north = next(s for s in data["sites"] if s["id"] == SITE)
    north["buildings"] = [b for b in north["buildings"] if b["id"] == BUILDING]
    data["sites"] = [north]
    data["incidents"] = [
        {"kind": "gas_leak", "at": "30s", "unit": "n1/201", "speed": "fast", "duration": "3m"},
        {"kind": "sos", "at": "60s", "resident": "elder-n1-101"},
        {"kind": "locker_forced", "at": "90s", "device": "locker-n1", "door": 3},
        {"kind": "kitchen_fire", "at": "60s", "unit": "n1/401", "rise_k_min": 10},
    ]
    data["faults"] = [{"fault": "malformed", "device": "pump-n1", "rate": 0.3}]
    return load_yaml(yaml.safe_dump(data, allow_unicode=True), Scenario, "<sample slice>")


def agent_config(sim: community.Community, mosquitto: Mosquitto, influxd: Influxd) -> EdgeConfig:
    devices = [
        DeviceConfig(
            id=info.id,
            kind=info.kind,  # type: ignore[arg-type]  # the simulator's kinds are the edge's
            unit=info.unit,
            room=info.room,
            resident=info.resident,
            interval_s=info.interval_s,
        )
        for info in sim.device_infos()
        if info.building == BUILDING
    ]
    return EdgeConfig(
        site=SITE,
        gateway=GATEWAY,
        building=BUILDING,
        broker=BrokerConfig(mosquitto.broker.host, mosquitto.broker.port),
        devices=devices,
        rules=RuleSet(include=PRESETS),
        # 10 s windows: each holds readings of all three wearables of n1, as the k-anonymous
        # elder-care series need (k=3 devices a window, edge/telemetry.py).
        telemetry=TelemetryConfig(url=influxd.url, database="anmin", interval_s=10, flush_s=0.2),
        heartbeat_s=1,
    )


async def fill(mosquitto: Mosquitto, influxd: Influxd, data_dir: Path) -> EdgeAgent:
    scenario = slice_of_the_sample()
    start = run_start(utc_now(), DURATION_S, SPEED)
    sim = community.build(scenario, start=start, duration_s=DURATION_S)
    config = agent_config(sim, mosquitto, influxd)
    assert {d.kind for d in config.devices} >= {"gas", "co", "smoke", "heat", "pir", "locker"}
    agent = EdgeAgent(config, data_dir=data_dir)
    runner = ScenarioRunner(sim, mosquitto.broker, speed=SPEED, connections="gateway")
    async with running(agent.run()) as tasks:
        assert await agent.local.wait_connected(10)
        sim_task = asyncio.create_task(runner.run())
        tasks.append(sim_task)
        await wait_for(sim_task.done, timeout=DURATION_S / SPEED + 30, what="the scenario")
        assert sim_task.exception() is None
        published = runner.counters["readings_published"]
        assert published > 0
        await wait_for(
            lambda: (
                agent.ingest.counters["readings"] + agent.ingest.counters["rejected.malformed"]
                >= published * 0.95
            ),
            what="the gateway to take the readings",
        )
        await wait_for(
            lambda: bool(rows(influxd, 'SELECT last("readings") FROM "gateway"')),
            what="the gateway's health points",
        )
    # Stopping the agent wrote its last open windows.
    agent.close()
    return agent


def rows(influxd: Influxd, query: str) -> list[dict[str, Any]]:
    result: dict[str, Any] = influxd.query(query, "anmin")
    [statement] = result["results"]
    assert "error" not in statement, f"{query}\n-> {statement['error']}"
    return list(statement.get("series") or [])


def substitute(query: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        query = query.replace(f"${name}", values[name])
    for macro, text in MACROS.items():
        query = query.replace(macro, text)
    assert not re.search(r"\$\{?[A-Za-z_]", query), f"unsubstituted variable in {query}"
    return query


def all_of(options: list[str]) -> str:
    """What Grafana puts in ``/^$var$/`` for "All" of a multi-value variable."""
    return "(" + "|".join(re.escape(o) for o in options) + ")"


def check_shape(spec: generate.QuerySpec, series: list[dict[str, Any]]) -> None:
    where = f"{spec.dashboard} / {spec.panel}"
    if not series:
        assert spec.shape.may_be_empty, f"{where}: no data\n{spec.query}"
        return
    for one in series:
        tags = one.get("tags") or {}
        assert set(spec.shape.tags) <= set(tags), f"{where}: tags {tags} lack {spec.shape.tags}"
        columns = [c for c in one["columns"] if c != "time"]
        patterns = {
            re.compile(p if p.startswith("^") else f"^{p}$"): t
            for p, t in spec.shape.columns.items()
        }
        for column in columns:
            kinds = [t for p, t in patterns.items() if p.match(column)]
            assert kinds, f"{where}: unexpected column {column!r} in {one['columns']}"
            index = one["columns"].index(column)
            values = [row[index] for row in one["values"] if row[index] is not None]
            wanted = (int, float) if kinds[0] == "number" else (str,)
            assert all(isinstance(v, wanted) for v in values), f"{where}: {column} {values[:5]}"
        for pattern in patterns:
            assert any(pattern.match(c) for c in columns), f"{where}: no column {pattern.pattern}"
    values = [v for one in series for row in one["values"] for v in row[1:] if v is not None]
    assert values or spec.shape.may_be_empty, f"{where}: only nulls\n{spec.query}"


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    found = [t["query"] for p in board["panels"] for t in p.get("targets", [])]
    found += [a["query"] for a in board["annotations"]["list"] if "query" in a]
    found += [v["query"] for v in board["templating"]["list"]]
    return found


async def test_every_panel_query_returns_data_of_its_shape(
    mosquitto: Mosquitto, influxd: Influxd, tmp_path: Path
) -> None:
    agent = await fill(mosquitto, influxd, tmp_path / "edge")
    assert agent.counters["alerts.raised"] > 0, "the slice raises alerts to annotate"

    _, specs = generate.build()
    committed = sorted(generate.DASHBOARDS_DIR.glob("*.json"))
    assert len(committed) == len(generate.BOARDS)
    checked = 0
    for path in committed:
        board = json.loads(path.read_text(encoding="utf-8"))
        mine = {s.query: s for s in specs if s.dashboard == board["uid"]}
        queries = dashboard_queries(board)
        # Every query in the JSON is one the generator registered a shape for, and back.
        assert sorted(queries) == sorted(mine), path.name
        values: dict[str, str] = {}
        for variable in board["templating"]["list"]:
            spec = mine[variable["query"]]
            series = rows(influxd, substitute(spec.query, values))
            check_shape(spec, series)
            options = sorted({row[1] for one in series for row in one["values"]})
            values[variable["name"]] = all_of(options)
            checked += 1
        assert values.get("site") == "(north)" and values.get("building") == "(n1)", values
        for query in queries:
            spec = mine[query]
            if spec.panel.startswith("variable: "):
                continue
            check_shape(spec, rows(influxd, substitute(query, values)))
            checked += 1
    assert checked == len(specs)
