"""Scenario YAML: strict, with file:line errors; the sample community."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from firmware_sim import community
from firmware_sim.errors import ScenarioError
from firmware_sim.families import KINDS
from firmware_sim.scenario import Scenario, load_scenario, load_yaml, sample_path
from tests.unit.sim.helpers import SMALL


def error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_yaml(text, Scenario, "town.yaml")
    return caught.value


def test_unknown_key_names_file_line_and_key() -> None:
    text = SMALL.replace("{kind: smoke, room: kitchen}", "{kind: smoke, rom: kitchen}")
    exc = error(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "rom:" in row)
    assert exc.line == line
    assert str(exc).startswith(f"town.yaml:{line}: unknown key 'rom'")


def test_bad_value_names_its_line() -> None:
    text = SMALL + "incidents:\n  - {kind: gas_leak, at: 2m, unit: b1/101, speed: medium}\n"
    exc = error(text)
    assert exc.line == len(SMALL.splitlines()) + 2
    assert "speed" in exc.where


def test_unknown_incident_kind_and_bad_duration() -> None:
    assert "kind" in str(error(SMALL + "incidents:\n  - {kind: meteor, at: 1m}\n"))
    exc = error(SMALL + "faults:\n  - {fault: dropout, device: pump-b1, at: soon}\n")
    assert exc.line == len(SMALL.splitlines()) + 2


def test_model_checks_give_lines() -> None:
    exc = error(SMALL + "faults:\n  - {fault: dropout}\n")
    assert "exactly one of 'device' or 'kind'" in str(exc)
    assert exc.line == len(SMALL.splitlines()) + 2


def test_not_yaml() -> None:
    assert error("name: [x\n").line is not None


def test_wrong_references_are_errors() -> None:
    scenario = load_yaml(
        SMALL + "incidents:\n  - {kind: sos, at: 1m, resident: nobody}\n", Scenario, "t"
    )
    with pytest.raises(ScenarioError, match="nobody"):
        community.build(scenario)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "none.yaml")


def test_the_sample_community() -> None:
    scenario = load_scenario(sample_path())
    c = community.build(scenario)
    infos = c.device_infos()
    assert len(scenario.sites) == 2
    assert len({i.building for i in infos}) == 4
    assert 280 <= len(infos) <= 330
    assert {i.kind for i in infos} == set(KINDS)
    # An hour of incidents, recorded for two: the missed routine is known only an hour
    # after the resident's usual wake time, and its expected alert must fall inside.
    assert (c.end - c.start).total_seconds() == 7200
    assert all(i.start < c.start + timedelta(hours=1) for i in c.ground_truth().incidents)
    assert all(e.latest <= c.end for i in c.ground_truth().incidents for e in i.expect)
    kinds = {i.kind for i in c.ground_truth().incidents}
    assert len(kinds) == 14  # every incident kind of the issue, and benign cooking
    faults = {f.fault for f in c.ground_truth().faults}
    assert faults == {
        "dropout", "stuck", "noise_burst", "drift", "dead_battery",
        "duplicate", "reorder", "delay", "clock_skew", "malformed",
    }  # fmt: skip
    for info in infos:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", info.id)
    assert all(i.start < c.end for i in c.ground_truth().incidents)
