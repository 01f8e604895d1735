"""Rules over a replay: the runner, scoring against ground truth, and ``anmin rules test``."""

from __future__ import annotations

from pathlib import Path

import msgspec
from typer.testing import CliRunner

from anmin.cli import app
from rules import RuleSet, load_yaml
from rules.replay import run_replay
from rules.scoring import score
from tests.unit.rules.support import T0, at, device
from wire import Reading
from wire.models import Severity
from wire.replay import (
    DeviceFault,
    ExpectedAlert,
    GroundTruth,
    Incident,
    ReplayHeader,
    ReplayRecord,
    encode_line,
)

RULES = "include: [gas, co-ul2034, smoke, device-health]\n"
GAS = device("gas-101", "gas", unit="101", interval_s=10)
CO = device("co-102", "co", unit="102", interval_s=30)
SMOKE = device("smoke-103", "smoke", unit="103", interval_s=10)
HEAT = device("heat-103", "heat", unit="103", interval_s=10)
DEVICES = [GAS, CO, SMOKE, HEAT]
END = 3 * 3600


def value(dev: str, t: float) -> dict[str, float]:
    if dev == "gas-101":  # a leak from 10 min to 20 min
        return {"gas_lel": 30.0 if 600 <= t < 1200 else 0.5}
    if dev == "co-102":  # 400 ppm from 30 min to 60 min
        return {"co_ppm": 400.0 if 1800 <= t < 3600 else 2.0}
    if dev == "smoke-103":  # a puff of toast smoke at 1 h (one reading), a dropout at 2 h
        return {"smoke_obs": 4.0 if 3600 <= t < 3605 else 0.1}
    return {"temp_c": 22.0 + 0.2 * ((t // 60) % 2)}


def build() -> tuple[list[bytes], GroundTruth]:
    header = ReplayHeader(scenario="unit-test", seed=1, start=T0, end=at(END), devices=DEVICES)
    lines = [encode_line(header)]
    seq: dict[str, int] = {}
    for t in range(0, END, 10):
        for dev in DEVICES:
            if t % dev.interval_s or (dev is SMOKE and 7200 <= t < 7800):
                continue
            seq[dev.id] = seq.get(dev.id, -1) + 1
            reading = Reading(device=dev.id, seq=seq[dev.id], ts=at(t), values=value(dev.id, t))
            record = ReplayRecord(at=at(t + 0.2), site="s1", gateway="gw-1", reading=reading)
            lines.append(encode_line(record))
    truth = GroundTruth(
        scenario="unit-test",
        seed=1,
        start=T0,
        end=at(END),
        incidents=[
            Incident(
                id="leak-1",
                kind="gas_leak",
                life_safety=True,
                site="s1",
                building="b1",
                unit="101",
                start=at(600),
                end=at(1200),
                expect=[
                    ExpectedAlert(
                        kind="gas", severity=Severity.EXTREME, device="gas-101", latest=at(660)
                    )
                ],
            ),
            Incident(
                id="co-1",
                kind="co",
                life_safety=True,
                site="s1",
                building="b1",
                unit="102",
                start=at(1800),
                end=at(3600),
                expect=[
                    ExpectedAlert(
                        kind="co",
                        severity=Severity.SEVERE,
                        unit="102",
                        building="b1",
                        latest=at(1800 + 15 * 60),
                    )
                ],
            ),
            Incident(
                id="toast-1",
                kind="cooking",
                life_safety=False,
                site="s1",
                building="b1",
                unit="103",
                start=at(3600),
                end=at(3620),
                forbid=[
                    ExpectedAlert(
                        kind="fire",
                        severity=Severity.EXTREME,
                        scope="unit",
                        unit="103",
                        latest=at(3620),
                    )
                ],
            ),
        ],
        faults=[DeviceFault(device="smoke-103", fault="dropout", start=at(7200), end=at(7800))],
    )
    return lines, truth


def test_the_runner_and_the_score() -> None:
    lines, truth = build()
    decoded = [msgspec.json.decode(line, type=ReplayHeader | ReplayRecord) for line in lines]
    header = decoded[0]
    assert isinstance(header, ReplayHeader)
    records = [r for r in decoded[1:] if isinstance(r, ReplayRecord)]
    ruleset = load_yaml(RULES, RuleSet, "rules.yaml")
    seen: list[int] = []
    result = run_replay(ruleset, header, records, progress=seen.append)
    assert seen == [1000 * i for i in range(1, len(seen) + 1)] and seen
    kinds = [(t.kind, t.phase.value) for t in result.transitions]
    assert ("gas", "raised") in kinds and ("co", "raised") in kinds
    assert ("device_silent", "raised") in kinds  # the smoke detector's dropout
    assert ("fire", "raised") not in kinds and ("smoke", "raised") not in kinds
    scored = score(result.transitions, truth)
    assert scored.life_safety_ok
    assert scored.kinds["gas_leak"].detected == 1 and scored.kinds["co"].detected == 1
    assert scored.kinds["gas_leak"].delays_s == [10.0]  # held 2 s, seen at the next 10 s tick
    assert scored.false == []


def test_a_missed_incident_and_a_false_alarm_are_scored() -> None:
    lines, truth = build()
    truth = msgspec.structs.replace(
        truth,
        incidents=[
            *truth.incidents,
            Incident(
                id="flood-1",
                kind="flood",
                life_safety=True,
                site="s1",
                building="b1",
                start=at(100),
                end=at(200),
                expect=[
                    ExpectedAlert(
                        kind="flood", severity=Severity.SEVERE, building="b1", latest=at(300)
                    )
                ],
            ),
        ][1:],  # and the gas leak is not in the truth: its alarm is false
    )
    decoded = [msgspec.json.decode(line, type=ReplayHeader | ReplayRecord) for line in lines]
    header = decoded[0]
    assert isinstance(header, ReplayHeader)
    records = [r for r in decoded[1:] if isinstance(r, ReplayRecord)]
    result = run_replay(load_yaml(RULES, RuleSet, "r.yaml"), header, records)
    scored = score(result.transitions, truth)
    assert not scored.life_safety_ok
    assert scored.kinds["flood"].missed == 1
    assert scored.kinds["gas"].false == 1


def test_anmin_rules_test_prints_the_timeline_and_the_table(tmp_path: Path) -> None:
    lines, truth = build()
    replay = tmp_path / "replay.jsonl"
    replay.write_bytes(b"".join(lines))
    truth_file = tmp_path / "truth.json"
    truth_file.write_bytes(msgspec.json.encode(truth))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["rules", "test", str(rules), "--replay", str(replay), "--truth", str(truth_file)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "alert timeline" in out and "gas-101" in out and "+0:10:10" in out
    assert "gas_leak" in out and "1/1" in out and "life safety: ok" in out


def test_anmin_rules_check_summarises_each_rule(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["rules", "check", "rules/presets/heat-a1r.yaml", "rules/presets/gas.yaml"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "heat (heat, life safety; per device, devices: heat)" in result.output
    assert "Severe when temp_c >= 58 °C or rise of temp_c over 1min >= 8 °C/min, held 20s" in (
        result.output
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    kind: y\n    creat: {}\n", encoding="utf-8")
    failed = CliRunner().invoke(app, ["rules", "check", str(bad)])
    assert failed.exit_code == 1
    assert f"{bad}:" in failed.output.replace("\n", "")


def test_the_legacy_gas_file_still_checks(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.yaml"
    legacy.write_text("gas: {low: 12, high: 30}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["rules", "check", str(legacy)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "gas low 12.0 / high 30.0 %LEL" in result.output
    assert "gas-lel" in result.output


def test_a_replay_faults_a_channel_out_of_its_range_as_the_gateway_does() -> None:
    """A gas sensor reading -5 %LEL during a leak: the replay splits the value off as the
    edge's ingest does, so the gas alarm stands on the last good value (fed as it came, -5
    cleared it) and device-out-of-range is raised."""
    header = ReplayHeader(scenario="unit-test", seed=1, start=T0, end=at(600), devices=[GAS])
    records = [
        ReplayRecord(
            at=at(t),
            site="s1",
            gateway="gw-1",
            reading=Reading(
                device=GAS.id, seq=t, ts=at(t), values={"gas_lel": 30.0 if t < 60 else -5.0}
            ),
        )
        for t in range(0, 600, 10)
    ]
    ruleset = load_yaml("include: [gas, device-health]\n", RuleSet, "rules.yaml")
    result = run_replay(ruleset, header, records)
    changes = [(x.rule, x.phase.value) for x in result.transitions]
    assert changes == [("gas-lel", "raised"), ("device-out-of-range", "raised")]
