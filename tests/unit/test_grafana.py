"""The committed dashboards are what grafana/generate.py makes, and what they draw and query
agrees with the rules' presets, the metric registry and the provisioning files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from grafana import generate
from rules.ruleset import PRESETS, load_preset, preset_names
from wire.metrics import metric

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "grafana" / "provisioning"


def boards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(generate.DASHBOARDS_DIR.glob("*.json"))
    }


def preset(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PRESETS / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


def rule(name: str, rule_id: str) -> dict[str, Any]:
    return next(r for r in preset(name)["rules"] if r["id"] == rule_id)


def test_the_committed_json_is_what_the_generator_makes() -> None:
    assert generate.stale() == [], "run: python grafana/generate.py, and commit the JSON"


def test_the_generator_writes_the_same_json_twice(tmp_path: Path) -> None:
    generate.write(tmp_path)
    assert generate.stale(tmp_path) == []
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "anmin-overview.json").write_text("{}", encoding="utf-8")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


def test_every_dashboard_has_site_and_building_variables_and_alert_annotations() -> None:
    found = boards()
    assert set(found) == {f"{make().uid}.json" for make in generate.BOARDS}
    for name, board in found.items():
        variables = [v["name"] for v in board["templating"]["list"]]
        assert variables[:2] == ["site", "building"], name
        [annotation] = board["annotations"]["list"]
        assert 'FROM "alert"' in annotation["query"], name
        assert annotation["datasource"]["uid"] == generate.DATASOURCE_UID


def test_every_panel_queries_the_provisioned_data_source_with_influxql() -> None:
    [source] = yaml.safe_load(
        (PROVISIONING / "datasources" / "anmin.yaml").read_text(encoding="utf-8")
    )["datasources"]
    assert source["uid"] == generate.DATASOURCE_UID
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
    for name, board in boards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            assert panel["description"], (name, panel["title"])
            assert panel["datasource"]["uid"] == generate.DATASOURCE_UID
            for target in panel["targets"]:
                assert target["rawQuery"] is True and target["query"].startswith("SELECT ")
                assert "$timeFilter" in target["query"] or "now()" in target["query"]


def test_the_dashboard_provider_loads_a_folder() -> None:
    [provider] = yaml.safe_load(
        (PROVISIONING / "dashboards" / "anmin.yaml").read_text(encoding="utf-8")
    )["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_metrics_and_kinds_queried_exist() -> None:
    _, specs = generate.build()
    text = "\n".join(s.query for s in specs)
    metrics = set(re.findall(r"\"metric\" = '([a-z0-9_]+)'", text))
    # Raw channels are registered metrics; detector scores are series the gateway derives.
    raw = {m for m in metrics if not m.startswith("score_")}
    assert raw and all(metric(m) is not None for m in raw), raw
    assert metric("door_3_open") and metric("door_1_temp_c")
    shipped = {r.kind for name in preset_names() for r in load_preset(name).resolved()}
    for kinds in (
        generate.LIFE_SAFETY_KINDS,
        generate.WELFARE_KINDS,
        generate.LOCKER_KINDS,
        generate.PUMP_KINDS,
    ):
        assert set(kinds) <= shipped, set(kinds) - shipped


def test_thresholds_drawn_are_the_presets_alarm_levels() -> None:
    gas = rule("gas", "gas-lel")["create"]
    assert gas["Severe"]["all"][0]["value"] == generate.GAS_LEL_SEVERE
    assert gas["Extreme"]["any"][0]["value"] == generate.GAS_LEL_EXTREME
    co = rule("co-en50291", "co")
    assert co["create"]["Extreme"]["any"][0]["value"] == generate.CO_PPM_EXTREME
    assert co["clear"]["all"][0]["value"] == generate.CO_PPM_CLEAR
    smoke = rule("smoke", "smoke")["create"]["Severe"]["all"][0]
    assert smoke["value"] == generate.SMOKE_OBS_SEVERE
    heat = rule("heat-a1r", "heat")["create"]["Severe"]["any"][0]
    assert heat["metric"] == "temp_c" and heat["value"] == generate.HEAT_STATIC_C
    chilled = rule("lockers", "locker-chilled-out-of-range")["create"]["Moderate"]["any"]
    assert [c["value"] for c in chilled] == [generate.CHILLED_HIGH_C, generate.CHILLED_LOW_C]
    pump = rule("pump", "pump-anomaly")["create"]["Moderate"]["any"]
    vibration = next(leaf for leaf in pump if leaf.get("metric") == "vibration_mm_s")
    assert vibration["value"] == generate.VIBRATION_ZONE_D  # the fixed ISO floor of the rule
    # and they are drawn: each appears as a threshold step of some panel
    steps = {
        step["value"]
        for board in boards().values()
        for panel in board["panels"]
        for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    }
    for level in (
        generate.GAS_LEL_SEVERE,
        generate.GAS_LEL_EXTREME,
        generate.CO_PPM_EXTREME,
        generate.SMOKE_OBS_SEVERE,
        generate.HEAT_STATIC_C,
        generate.CHILLED_HIGH_C,
        generate.VIBRATION_ZONE_D,
    ):
        assert level in steps, level


def test_elder_care_shows_no_device_or_unit() -> None:
    board = boards()["anmin-elder-care.json"]
    queries = [t["query"] for p in board["panels"] for t in p["targets"]]
    queries.append(board["annotations"]["list"][0]["query"])
    for query in queries:
        selected = query.split(" FROM ")[0] + " ".join(re.findall(r"GROUP BY [^)]*$", query))
        assert '"device"' not in selected and '"unit"' not in selected, query
        assert '"resident"' not in query
