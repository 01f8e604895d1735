"""The gas preset through the engine, and the legacy ``GasRule``/``step`` run by the engine."""

from __future__ import annotations

import pytest

from rules import Engine, GasRule, GasState, RuleSet, step
from tests.unit.rules.support import Sim, at, device
from wire import Reading

GAS = device("gas-1", "gas")


def series(values: list[tuple[float, float]]) -> Sim:
    sim = Sim("gas")
    for t, v in values:
        sim.feed(t, GAS, gas_lel=v)
    return sim


def constant(value: float, until: float, start: float = 0.0) -> list[tuple[float, float]]:
    return [(start + i, value) for i in range(int(until - start) + 1)]


def test_low_level_after_its_hold_then_high_then_clear_with_hysteresis() -> None:
    sim = series(
        constant(12.0, 10) + constant(30.0, 20, 11) + constant(7.0, 60, 21) + constant(2.0, 100, 61)
    )
    assert sim.changes() == [
        (5, "gas-lel", "raised", "Severe"),
        (13, "gas-lel", "updated", "Extreme"),
        (71, "gas-lel", "cleared", "Extreme"),
    ]
    raised = sim.log[0][1]
    assert [a.do for a in raised.actions] == ["siren", "notify"]
    assert [a.do for a in sim.log[1][1].actions] == ["valve_close"]
    assert raised.life_safety and raised.kind == "gas"


def test_a_puff_does_not_alarm_and_wavering_does_not_flap() -> None:
    assert series(constant(0.5, 10) + constant(15.0, 13, 11) + constant(0.5, 60, 14)).log == []
    wavering = series(constant(30.0, 5) + [(6 + i, 4.0 if i % 2 else 6.0) for i in range(100)])
    assert [c[2] for c in wavering.changes()] == ["raised"]


def test_a_fast_rise_escalates_before_the_high_level() -> None:
    """10 -> 20 % LEL in a minute (10 %LEL/min): Extreme at about 20 %, below the 25 % level."""
    sim = series([(t, 10.0 + t / 6) for t in range(0, 70)])
    assert [(c[2], c[3]) for c in sim.changes()] == [("raised", "Severe"), ("updated", "Extreme")]
    escalated = sim.log[1][1]
    assert escalated.evidence["gas_lel"] < 25
    assert escalated.evidence["gas_lel_rate"] >= 5


def test_a_slow_rise_stays_severe() -> None:
    sim = series([(t * 10, 10.0 + t * 0.1) for t in range(0, 100)])  # 0.6 %LEL/min
    assert [(c[2], c[3]) for c in sim.changes()] == [("raised", "Severe")]


def test_a_held_alarm_completes_on_a_tick_without_new_readings() -> None:
    sim = Sim("gas")
    sim.feed(0, GAS, gas_lel=12)
    sim.tick(4)
    assert sim.log == []
    sim.tick(5)
    assert sim.changes() == [(5, "gas-lel", "raised", "Severe")]


SERIES = [
    constant(12.0, 10) + constant(30.0, 20, 11) + constant(7.0, 60, 21) + constant(2.0, 100, 61),
    constant(40.0, 10),
    constant(0.5, 10) + constant(15.0, 13, 11) + constant(0.5, 60, 14),
    constant(30.0, 5) + [(6 + i, 4.0 if i % 2 else 6.0) for i in range(100)],
    [(i, float((i * 7) % 31)) for i in range(300)],
]


@pytest.mark.parametrize("values", SERIES)
@pytest.mark.parametrize(
    "rule", [GasRule(), GasRule(low=8, high=20, hold_low_s=0, hold_high_s=3, hold_clear_s=0)]
)
def test_the_engine_runs_the_legacy_gas_section_like_step(
    rule: GasRule, values: list[tuple[float, float]]
) -> None:
    """A file with only ``gas:`` runs as rule gas-lel, with step()'s transitions."""
    engine = Engine(RuleSet(gas=rule))
    state = GasState()
    legacy, new = [], []
    for seq, (t, v) in enumerate(values):
        state, change = step(rule, state, v, at(t))
        if change is not None:
            legacy.append((t, change.phase, change.severity))
        reading = Reading(device=GAS.id, seq=seq, ts=at(t), values={"gas_lel": v})
        new += [(t, c.phase, c.severity) for c in engine.feed(GAS, reading, at(t))]
    assert new == legacy
