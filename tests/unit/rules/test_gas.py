"""The two-level gas rule, driven with simulated time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from rules import GasRule, GasState, Transition, step
from wire import Phase, Severity

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def run(rule: GasRule, series: list[tuple[float, float]]) -> list[tuple[float, Transition]]:
    """Feed (seconds, %LEL) pairs; return (seconds, transition) for each change."""
    state = GasState()
    out = []
    for seconds, value in series:
        state, transition = step(rule, state, value, T0 + timedelta(seconds=seconds))
        if transition is not None:
            out.append((seconds, transition))
    return out


def constant(value: float, until: float, start: float = 0.0) -> list[tuple[float, float]]:
    n = int(until - start)
    return [(start + i, value) for i in range(n + 1)]


def test_low_level_alarms_only_after_its_hold() -> None:
    rule = GasRule(hold_low_s=5)
    changes = run(rule, constant(12.0, 20))
    assert [(t, c.phase, c.severity) for t, c in changes] == [(5, Phase.RAISED, Severity.SEVERE)]


def test_a_brief_puff_does_not_alarm() -> None:
    rule = GasRule(hold_low_s=5)
    series = constant(0.5, 10) + constant(15.0, 13, 11) + constant(0.5, 60, 14)
    assert run(rule, series) == []


def test_escalates_to_high_then_clears_with_hysteresis() -> None:
    rule = GasRule(hold_low_s=5, hold_high_s=2, clear_below=5, hold_clear_s=10)
    series = (
        constant(12.0, 10)  # low from t=0
        + constant(30.0, 20, 11)  # high from t=11
        + constant(7.0, 60, 21)  # below low but above clear: stays in alarm
        + constant(2.0, 100, 61)  # below clear from t=61
    )
    changes = run(rule, series)
    assert [(t, c.phase, c.severity) for t, c in changes] == [
        (5, Phase.RAISED, Severity.SEVERE),
        (13, Phase.UPDATED, Severity.EXTREME),
        (71, Phase.CLEARED, Severity.EXTREME),
    ]
    cleared = changes[-1][1]
    assert cleared.evidence["peak"] == 30.0


def test_a_fast_leak_goes_straight_to_high() -> None:
    rule = GasRule(hold_low_s=5, hold_high_s=2)
    changes = run(rule, constant(40.0, 10))
    assert [(t, c.phase, c.severity) for t, c in changes] == [(2, Phase.RAISED, Severity.EXTREME)]


def test_wavering_around_the_clear_level_does_not_flap() -> None:
    rule = GasRule(hold_clear_s=10)
    series = constant(30.0, 5) + [(6 + i, 4.0 if i % 2 else 6.0) for i in range(100)]
    changes = run(rule, series)
    assert [c.phase for _, c in changes] == [Phase.RAISED]


@pytest.mark.parametrize(
    "fields",
    [{"low": 30, "high": 25}, {"clear_below": 12, "low": 10}, {"low": 0}, {"hold_low_s": -1}],
)
def test_impossible_thresholds_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises((ValueError, msgspec.ValidationError)):
        msgspec.convert(fields, GasRule)
