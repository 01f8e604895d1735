"""The reading gate (rules.engine._Gate) spares full evaluations; it must never change what
the engine decides. A seeded random stream over every preset, plus rules with windows, groups,
latches and hours, is run twice: gated, and with every rule a reading reaches (reads a metric
of, or tests readings as such) and every clocked rule on every tick judged in full."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from rules import Engine, RuleSet, Transition, load_yaml
from rules import engine as engine_module
from rules.language import Rule
from rules.ruleset import preset_names
from tests.unit.rules.support import at, device
from wire import Reading
from wire.metrics import metric, split_by_range
from wire.replay import DeviceInfo

EXTRA = """\
rules:
  - id: cold-or-co
    kind: heat
    scope: unit
    devices: {kinds: [heat, co]}
    create:
      Minor:
        any:
          - {metric: temp_c, agg: max, over: 2min, op: "<", value: 21, unit: "°C"}
          - {metric: co_ppm, op: ">=", value: 20, unit: ppm}
        for: 30s
    clear:
      all: [{metric: co_ppm, op: "<", value: 5, unit: ppm}]
  - id: hot-and-co
    kind: fire
    scope: unit
    devices: {kinds: [heat, co]}
    create:
      Moderate:
        all:
          - {metric: temp_c, op: ">=", value: 40, unit: "°C"}
          - {metric: co_ppm, op: ">=", value: 30, unit: ppm}
      Severe:
        all:
          - {metric: temp_c, op: ">=", value: 55, unit: "°C", within: 3min}
          - {rate: co_ppm, over: 1min, op: ">=", value: 20, unit: ppm/min}
  - id: co-with-heat-lately
    kind: fire
    scope: unit
    devices: {kinds: [heat, co]}
    create:
      Extreme:
        all:
          - {metric: co_ppm, op: ">=", value: 100, unit: ppm}
          - all:  # a group latch: hot and rising at one time, in the last 2 min
              - {metric: temp_c, op: ">=", value: 45, unit: "°C"}
              - {rate: temp_c, over: 1min, op: ">=", value: 2, unit: "°C/min"}
            within: 2min
  - id: hot-lately-and-co
    kind: fire
    scope: unit
    devices: {kinds: [heat, co]}
    create:
      Moderate:
        all:  # a maximum over a window (it only falls with time), beside a latest value
          - {metric: temp_c, agg: max, over: 10min, op: ">=", value: 45, unit: "°C"}
          - {metric: co_ppm, op: ">=", value: 25, unit: ppm}
  - id: cold-lately-and-co
    kind: fire
    scope: unit
    devices: {kinds: [heat, co]}
    create:
      Minor:
        all:  # and a minimum
          - {metric: temp_c, agg: min, over: 5min, op: "<=", value: 19.5, unit: "°C"}
          - {metric: co_ppm, op: ">", value: 5, unit: ppm}
  - id: night-smoke
    kind: smoke
    scope: building
    devices: {kinds: [smoke]}
    create:
      Minor:
        all:
          - {hours: "22:00-06:00"}
          - {metric: smoke_obs, agg: mean, over: 5min, op: ">=", value: 0.5, unit: "%/m"}
  - id: quiet-then-held
    kind: device_silent
    devices: {kinds: [smoke, heat, co]}
    create:
      Minor:
        all: [{silent: 90s}]
    clear: {for: 60s}  # idle again 60 s after a reading, before it can fall silent again
"""

# kind -> metric -> (usual values, alarming values)
METRICS: dict[str, dict[str, tuple[list[float], list[float]]]] = {
    "gas": {"gas_lel": ([0, 0.5, 1, 2], [8, 12, 25, 40, 60])},
    "co": {"co_ppm": ([0, 2, 4, 6], [25, 35, 60, 120, 400])},
    "smoke": {"smoke_obs": ([0, 0.1, 0.3], [0.8, 1.5, 3.5, 6])},
    "heat": {"temp_c": ([19, 20.5, 22, 24], [42, 50, 58, 70])},
    "electrical": {"residual_ma": ([2, 5, 10], [35, 80, 300]), "cable_temp_c": ([30, 35], [75])},
    "flood": {"water_level_cm": ([0, 0.5], [3, 8, 20])},
    "pump": {
        "vibration_mm_s": ([1.8, 2.0, 2.2], [7, 11]),
        "pressure_bar": ([3.0, 3.2], [0.5, 8]),
    },
    "wearable": {
        "heart_rate_bpm": ([65, 72, 80], [35, 150, 0]),
        "spo2_pct": ([96, 98], [85]),
        "fall": ([0], [1]),
        "battery_pct": ([80, 60], [10, 3]),
    },
    "sos": {"sos": ([0], [1])},
    "pir": {"motion": ([0, 1], [0])},
    "door": {"contact_open": ([0], [1])},
    "bed": {"bed_occupied": ([0, 1], [1])},
    "locker": {
        "door_open": ([0], [1]),
        "tamper": ([0], [1]),
        "unlock_authorised": ([1], [0]),
        "pin_failures": ([0], [2, 4]),
        "parcel_age_h": ([5, 20], [80]),
        "door_2_temp_c": ([4, 5], [10, -1]),
    },
}


def _devices() -> list[DeviceInfo]:
    out = []
    for unit in ("101", "102", "201"):
        for kind in METRICS:
            out.append(device(f"{kind}-{unit}", kind, unit=unit, resident=f"r-{unit}"))
    return out


def _stream(seed: int, steps: int) -> Iterator[tuple[float, DeviceInfo, dict[str, float], float]]:
    """Readings at random times, with the device's clock skew; each flat is alarming for a
    while now and then (its heat and CO together, so that rules over both can meet), and now
    and then a sensor reads out of its range or its clock is off."""
    rng = random.Random(seed)
    devices = _devices()
    alarming: dict[str | None, float] = {}  # unit -> alarming until
    t = 0.0
    for _ in range(steps):
        t += rng.choice([0.5, 2.0, 5.0, 15.0, 40.0])
        dev = rng.choice(devices)
        if rng.random() < 0.01:
            alarming[dev.unit] = t + rng.choice([20.0, 120.0, 900.0])
        hot = alarming.get(dev.unit, 0.0) > t
        table = METRICS[dev.kind]
        names = rng.sample(sorted(table), k=rng.randint(1, len(table)))
        values = {}
        for name in names:
            usual, alarm = table[name]
            values[name] = rng.choice(alarm if hot and rng.random() < 0.7 else usual)
        if rng.random() < 0.01:  # a faulty sensor: a value no such sensor can read
            name = rng.choice(names)
            found = metric(name)
            assert found is not None
            values[name] = found.high * 2 + 1
        skew = rng.choice([-900.0, 400.0, 20.0]) if rng.random() < 0.02 else 0.0
        yield t, dev, values, skew


def _rules() -> RuleSet:
    extra = load_yaml(textwrap.dedent(EXTRA), RuleSet, "extra.yaml")
    presets = [n for n in preset_names() if n != "co-en50291"]  # one CO standard at a time
    return RuleSet(include=presets, rules=extra.rules)


class _Counted:
    """A plan's merged gate, counting the readings it let skip a plan's passable steps."""

    skipped = 0

    def __init__(self, gate: Any) -> None:
        self.gate = gate

    def holds(self, device: Any) -> bool:
        held = bool(self.gate.holds(device))
        _Counted.skipped += not held
        return held


def _run(
    seed: int, gated: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Transition], int, int]:
    """Every transition, in order, how many full evaluations readings took, and how many
    readings the plans' merged gates let past their passable steps (engine._Plan)."""
    _Counted.skipped = 0
    with monkeypatch.context() as patch:
        if not gated:  # every rule the reading reaches, judged in full
            step = engine_module._step

            def judged(*args: Any) -> Any:
                mode, *rest = step(*args)
                return (engine_module._JUDGE if mode == engine_module._GATED else mode, *rest)

            patch.setattr(engine_module, "_step", judged)
            patch.setattr(engine_module, "_GATE_TICKS", False)
            # nor the plans' way past their idle steps: each step is looked at on its own
            patch.setattr(engine_module, "_passable", lambda step: False)
        else:
            made = engine_module._Plan.__init__

            def counted_plan(plan: Any, *args: Any) -> None:
                made(plan, *args)
                if plan.gate is not None:
                    plan.gate = _Counted(plan.gate)

            patch.setattr(engine_module._Plan, "__init__", counted_plan)
        evaluations = 0
        judge = engine_module.Engine._evaluate

        def counted(self: Engine, *args: object, **kwargs: bool) -> list[Transition]:
            nonlocal evaluations
            evaluations += kwargs["fed"]
            return judge(self, *args, **kwargs)  # type: ignore[arg-type]

        patch.setattr(engine_module.Engine, "_evaluate", counted)
        rules = _rules()
        engine = Engine(rules, utc_offset_s=8 * 3600)
        engine.add_devices(_devices(), at(0))
        out: list[Transition] = []
        seq: dict[str, int] = {}
        last_tick = 0.0
        for n, (t, dev, values, skew) in enumerate(_stream(seed, 8000)):
            while last_tick + 1.0 <= t:  # the agent ticks every second; here coarser
                last_tick = max(last_tick + 1.0, t - 5.0)
                out += engine.tick(at(last_tick))
            seq[dev.id] = seq.get(dev.id, 0) + 1
            # Half the faulty values split off as the edge's ingest does (a faulted channel),
            # half fed as they came (a replay's or a test's).
            bad = None
            if n % 2:
                values, bad = split_by_range(values)
            reading = Reading(device=dev.id, seq=seq[dev.id], ts=at(t + skew), values=values)
            out += engine.feed(dev, reading, at(t), bad)
            if n == 3000:  # a restart: the gate must not trust what it judged before
                engine = Engine.restore(rules, engine.snapshot(), utc_offset_s=8 * 3600)
            if n == 5000:  # an edited rule restarts its timers
                edited = [_edited(r) if r.id == "gas-lel" else r for r in rules.resolved()]
                out += engine.reload(edited, at(t))
        return out, evaluations, _Counted.skipped


def _at_once_sorted(transitions: list[Transition]) -> list[Transition]:
    """In order of time, and those at one time by alarm (stable: one alarm's stay in order).
    Which of two alarms a tick lists first is no decision: a silence rule's tick visits only
    its running tracks while none of its idle devices can fall silent yet."""
    return sorted(transitions, key=lambda x: (x.at, x.rule, x.alert_key))


def _edited(rule: Rule) -> Rule:
    edited = msgspec.structs.replace(rule, message="gas {gas_lel:.0f} %LEL (edited)")
    assert edited.fingerprint() != rule.fingerprint()
    return edited


@pytest.mark.parametrize("seed", [1, 2])
def test_the_gate_changes_no_decision(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    gated, spared, skipped = _run(seed, True, monkeypatch)
    full, judged, none = _run(seed, False, monkeypatch)
    assert _at_once_sorted(gated) == _at_once_sorted(full)
    raised = {x.rule for x in full if x.phase.value == "raised"}
    # The stream must exercise the rules, or the comparison proves nothing.
    assert len(full) > 100
    # A detector's score and an "all" of latest values (vital-signs: 0 < hr < 40) are gated.
    assert {
        "gas-lel",
        "hot-and-co",
        "device-out-of-range",
        "device-clock-skew",
        "pump-anomaly",
        "vital-signs",
        "quiet-then-held",
        "hot-lately-and-co",
        "cold-lately-and-co",
    } <= raised
    assert spared < judged * 0.6  # and the gate must spare work
    # Readings pass every idle step of their plan at one test (here alarms are frequent).
    assert none == 0 and skipped > 1000


def test_a_plan_takes_its_quick_way_again_once_its_alarm_has_cleared() -> None:
    """The plan's idle steps are skipped at one test only while each is idle and settled
    (engine._Plan); an alarm opening stops that at once, and its clear brings it back."""
    engine = Engine(RuleSet(include=["gas"]))
    gas = device("gas-1", "gas")
    seq = 0

    def feed(t: float, lel: float) -> list[Transition]:
        nonlocal seq
        seq += 1
        return engine.feed(
            gas, Reading(device=gas.id, seq=seq, ts=at(t), values={"gas_lel": lel}), at(t)
        )

    def calm() -> bool:
        plan = engine._plans[(gas.id, ("gas_lel",))]
        assert plan.gate is not None and plan.passable
        return plan.checked == engine._epoch and plan.calm

    feed(0, 0.5)
    feed(1, 0.5)
    assert calm()
    t = 2.0
    raised: list[Transition] = []
    while not raised:  # the level held for its 5 s
        raised = [x for x in feed(t, 12) if x.phase.value == "raised"]
        t += 1
        assert t < 60
    feed(t, 0.5)
    assert not calm()  # its alert is open: each reading judged
    cleared: list[Transition] = []
    while not cleared:  # under 5 %LEL for 10 s
        t += 1
        cleared = [x for x in feed(t, 0.5) if x.phase.value == "cleared"]
        assert t < 120
    feed(t + 1, 0.5)
    assert calm()


def test_a_merged_gate_keeps_the_loosest_rate_and_an_all_of_latest_values() -> None:
    """A plan's merged gate computes one rate per metric and window, at the loosest of its
    rules' thresholds, and tests a rule whose bound is an "all" of latest values (a heart rate
    over 0 and under 40) on the scope: a reading none of them can change goes past every
    rule, and one that can is judged."""
    rules = load_yaml(
        textwrap.dedent(
            """\
            rules:
              - id: fast-rise
                kind: heat
                devices: {kinds: [heat]}
                create:
                  Moderate:
                    any: [{rate: temp_c, over: 60s, op: ">=", value: 8, unit: "°C/min"}]
              - id: slow-rise
                kind: heat
                devices: {kinds: [heat]}
                create:
                  Minor:
                    any: [{rate: temp_c, over: 60s, op: ">=", value: 3, unit: "°C/min"}]
              - id: slow-pulse
                kind: vital_signs
                scope: resident
                devices: {kinds: [wearable]}
                create:
                  Severe:
                    all:
                      - {metric: heart_rate_bpm, op: ">", value: 0, unit: bpm}
                      - {metric: heart_rate_bpm, op: "<", value: 40, unit: bpm}
            """
        ),
        RuleSet,
        "merged.yaml",
    )
    engine = Engine(rules)
    heat = device("heat-1", "heat")
    watch = device("watch-1", "wearable", resident="r-1")
    seq = 0

    def feed(dev: DeviceInfo, t: float, **values: float) -> list[str]:
        nonlocal seq
        seq += 1
        reading = Reading(device=dev.id, seq=seq, ts=at(t), values=values)
        return [x.rule for x in engine.feed(dev, reading, at(t)) if x.phase.value == "raised"]

    def quick(dev: DeviceInfo, metric: str) -> bool:
        plan = engine._plans[(dev.id, (metric,))]
        assert plan.gate is not None
        return plan.calm and not plan.gate.holds(engine.state.devices[dev.id])

    raised: list[str] = []
    for t in range(0, 120, 5):  # steady, then heating at 5 °C/min from 2 min on
        raised += feed(heat, t, temp_c=20.0)
        raised += feed(watch, t, heart_rate_bpm=72.0)
    assert quick(heat, "temp_c") and quick(watch, "heart_rate_bpm")  # both past every rule
    gate = engine._plans[(heat.id, ("temp_c",))].gate
    assert gate is not None and [r[4] for r in gate.rates] == [3.0]  # one rate, the loosest
    for t in range(120, 300, 5):
        raised += feed(heat, t, temp_c=20.0 + (t - 120) / 12)
    assert raised == ["slow-rise"]
    raised += feed(watch, 300, heart_rate_bpm=35.0)
    assert raised == ["slow-rise", "slow-pulse"]
