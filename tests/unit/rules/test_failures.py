"""A rule (or detector) that raises costs that rule alone: the device's other rules decide on
the same reading, and a tick goes on to the rules after it. Before, one bad rule (a rate that
divided by zero) silenced every alarm of the device's readings, and one failing in a tick
stopped the agent's housekeeping, and the agent with it."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import pytest

from rules import Engine, RuleSet, load_yaml
from tests.unit.rules.support import Sim, device

PUMP = device("pump-1", "pump", unit=None, interval_s=10.0)

# The alarm every test expects to come on time, beside a rule that fails.
VIBRATION = """\
  - id: b-vibration
    kind: pump_alarm
    devices: {kinds: [pump]}
    create:
      Moderate:
        all: [{metric: vibration_mm_s, op: ">=", value: 11, unit: mm/s}]
        for: 20s
"""


def _rules(first: str) -> RuleSet:
    """``first`` (one rule, as YAML), then the vibration alarm."""
    text = "rules:\n" + textwrap.indent(textwrap.dedent(first), "  ") + VIBRATION
    return load_yaml(text, RuleSet, "test.yaml")


RULES = _rules(
    """\
      - id: a-scored
        kind: pump_anomaly
        devices: {kinds: [pump]}
        create:
          Minor: {all: [{score: broken, op: ">=", value: 0.5}]}
    """
)


class Broken:
    """A detector with a bug: every call raises."""

    def learn_one(self, x: Mapping[str, float]) -> None:
        raise RuntimeError("learn_one: a bug")

    def score_one(self, x: Mapping[str, float]) -> float:
        raise RuntimeError("score_one: a bug")


def _raised(sim: Sim) -> list[str]:
    return [x.rule for _, x in sim.log if x.phase.value == "raised"]


def test_a_detector_that_raises_leaves_the_other_rules_deciding() -> None:
    sim = Sim(RULES, detectors={"broken": Broken})
    for t in range(0, 40, 10):
        sim.feed(t, PUMP, vibration_mm_s=15.0)
    assert _raised(sim) == ["b-vibration"]
    assert sim.engine.failures["detector broken"] == 4
    assert "broken" not in sim.engine.state.devices[PUMP.id].scores  # no stale score


def _failing(rule_id: str, *, fed: bool) -> Any:
    """Engine._evaluate, raising for one rule on readings (fed) or on ticks."""
    evaluate = Engine._evaluate

    def failing(self: Engine, compiled: Any, key: str, now: Any, **kwargs: bool) -> Any:
        if compiled.rule.id == rule_id and kwargs["fed"] == fed:
            raise ZeroDivisionError("a bug in one rule")
        return evaluate(self, compiled, key, now, **kwargs)

    return failing


def test_a_rule_that_raises_on_a_reading_costs_that_rule_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Engine, "_evaluate", _failing("a-scored", fed=True))
    sim = Sim(RULES, detectors={"broken": Broken})
    for t in range(0, 40, 10):
        sim.feed(t, PUMP, vibration_mm_s=15.0)
    assert [(t, x.rule) for t, x in sim.log] == [(20, "b-vibration")]  # held its 20 s
    assert sim.engine.failures["a-scored"] == 4


# Two holds from one reading: only ticks complete them.
HELD = _rules(
    """\
      - id: a-held
        kind: pump_alarm
        devices: {kinds: [pump]}
        create:
          Minor:
            all: [{metric: vibration_mm_s, op: ">=", value: 5, unit: mm/s}]
            for: 20s
    """
)


def test_a_rule_that_raises_in_a_tick_costs_that_rule_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both holds run from one reading; only ticks can complete them. The first rule's tick
    raises; the vibration alarm's hold still completes at its tick."""
    monkeypatch.setattr(Engine, "_evaluate", _failing("a-held", fed=False))
    sim = Sim(HELD)
    sim.feed(0, PUMP, vibration_mm_s=15.0)
    for t in range(5, 30, 5):
        sim.tick(t)
    assert [(t, x.rule) for t, x in sim.log] == [(20, "b-vibration")]
    assert sim.engine.failures["a-held"] == 5
