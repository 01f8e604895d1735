"""Combustible gas: a two-level %LEL alarm with hold times and hysteresis on clear.

GB/T 50493-2019 asks for two levels (level 1 at or below 25 % LEL, level 2 at or below 50 % LEL);
household detectors commonly alarm at about 10 % LEL (low) and 20-25 % LEL (high). Both levels,
their hold times and the clear level are configurable (see ``GasRule``).

The rule is a pure function of (state, value, time): no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated

import msgspec
from msgspec import Meta

from rules.language import Rule
from rules.transition import Transition
from wire.models import Phase, Severity

Lel = Annotated[float, Meta(gt=0, le=100)]
Seconds = Annotated[float, Meta(ge=0, le=3600)]

_RANK = {None: 0, Severity.SEVERE: 1, Severity.EXTREME: 2}


class GasRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds in %LEL; holds in seconds. ``low`` -> Severe, ``high`` -> Extreme (CAP scale)."""

    id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = "gas-lel"
    metric: Annotated[str, Meta(min_length=1, max_length=64)] = "gas_lel"
    low: Lel = 10.0
    high: Lel = 25.0
    hold_low_s: Seconds = 5.0
    hold_high_s: Seconds = 2.0
    clear_below: Lel = 5.0
    hold_clear_s: Seconds = 10.0
    # Close the gas valve (where the device has one) at the high level.
    close_valve_at_high: bool = True

    def __post_init__(self) -> None:
        if not self.clear_below < self.low < self.high:
            raise ValueError(
                f"gas rule {self.id!r}: need clear_below ({self.clear_below}) < low "
                f"({self.low}) < high ({self.high}), in %LEL; fix the thresholds"
            )

    def as_rule(self) -> Rule:
        """The same alarm in the rule language, for the engine (rules/engine.py)."""
        return _as_rule(self)


@dataclass(frozen=True, slots=True)
class GasState:
    """What the rule remembers about one sensor between readings."""

    level: Severity | None = None
    low_since: datetime | None = None  # value continuously >= low since then
    high_since: datetime | None = None
    clear_since: datetime | None = None  # value continuously < clear_below since then
    peak: float = 0.0


def _since(previous: datetime | None, active: bool, now: datetime) -> datetime | None:
    if not active:
        return None
    return previous or now


def _held(since: datetime | None, hold_s: float, now: datetime) -> bool:
    return since is not None and now - since >= timedelta(seconds=hold_s)


def step(
    rule: GasRule, state: GasState, value: float, now: datetime
) -> tuple[GasState, Transition | None]:
    """Feed one reading; return the new state and, when the alert changes, a transition."""
    state = replace(
        state,
        low_since=_since(state.low_since, value >= rule.low, now),
        high_since=_since(state.high_since, value >= rule.high, now),
        clear_since=_since(state.clear_since, value < rule.clear_below, now),
        peak=max(state.peak, value) if state.level is not None else value,
    )
    wanted: Severity | None = None
    if _held(state.high_since, rule.hold_high_s, now):
        wanted = Severity.EXTREME
    elif _held(state.low_since, rule.hold_low_s, now):
        wanted = Severity.SEVERE

    evidence = {
        rule.metric: value,
        "threshold": rule.high if wanted is Severity.EXTREME else rule.low,
    }
    if _RANK[wanted] > _RANK[state.level]:
        phase = Phase.RAISED if state.level is None else Phase.UPDATED
        assert wanted is not None
        label = "high" if wanted is Severity.EXTREME else "low"
        message = f"combustible gas {value:.1f} %LEL, {label} alarm level"
        return replace(state, level=wanted, clear_since=None), Transition(
            phase, wanted, rule.id, "gas", now, evidence, message
        )
    # Hysteresis: only a value below the clear level, held, ends the alert; no de-escalation,
    # so that a wavering leak does not flap between levels.
    if state.level is not None and _held(state.clear_since, rule.hold_clear_s, now):
        cleared = Transition(
            Phase.CLEARED,
            state.level,
            rule.id,
            "gas",
            now,
            {rule.metric: value, "peak": state.peak},
            f"combustible gas back to {value:.1f} %LEL (peak {state.peak:.1f})",
        )
        return replace(state, level=None, peak=value), cleared
    return state, None


def _as_rule(rule: GasRule) -> Rule:
    def level(op: str, value: float, hold: float) -> dict[str, object]:
        unit = "%LEL"
        return {
            "all": [{"metric": rule.metric, "op": op, "value": value, "unit": unit}],
            "for": hold,
        }

    actions: list[dict[str, object]] = [{"do": "siren"}]
    if rule.close_valve_at_high:
        actions.append({"do": "valve_close", "at": "Extreme"})
    return msgspec.convert(
        {
            "id": rule.id,
            "kind": "gas",
            "life_safety": True,
            "devices": {"kinds": ["gas"]},
            "create": {
                "Extreme": level(">=", rule.high, rule.hold_high_s),
                "Severe": level(">=", rule.low, rule.hold_low_s),
            },
            "clear": level("<", rule.clear_below, rule.hold_clear_s),
            "actions": actions,
            "message": f"combustible gas {{{rule.metric}:.1f}} %LEL, {{severity}} alarm",
        },
        Rule,
    )
