"""Detectors inside the engine: one instance per (device, detector) that learns each reading
once however many rules read it, and learned models that survive snapshot and restore."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Mapping

from rules import Engine, RuleSet, load_yaml
from rules.detect.base import Protected
from rules.detect.config import RobustZConfig
from rules.detectors import build
from tests.unit.rules.support import Sim, device

PUMP = device("pump-1", "pump", unit=None, interval_s=10.0)


def ruleset(text: str) -> RuleSet:
    return load_yaml(textwrap.dedent(text), RuleSet, "test.yaml")


TWO_RULES = ruleset(
    """\
    rules:
      - id: pump-watch
        kind: pump_anomaly
        devices: {kinds: [pump]}
        create:
          Minor:
            all:
              - {score: vib, op: ">=", value: 0.5}
            for: 30s
      - id: pump-alarm
        kind: pump_alarm
        devices: {kinds: [pump]}
        create:
          Moderate:
            all:
              - {score: vib, op: ">=", value: 0.8}
            for: 60s
    """
)


class Counting:
    """A stand-in detector: the score is the value over 100; it counts what it learns."""

    def __init__(self) -> None:
        self.learned: list[float] = []

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.learned.append(x["vibration_mm_s"])

    def score_one(self, x: Mapping[str, float]) -> float:
        return min(1.0, x.get("vibration_mm_s", 0.0) / 100)


def test_two_rules_reading_one_detector_share_it_and_teach_it_once() -> None:
    made: list[Counting] = []

    def factory() -> Counting:
        made.append(Counting())
        return made[-1]

    sim = Sim(TWO_RULES, detectors={"vib": factory})
    sim.run(PUMP, lambda t: {"vibration_mm_s": 10.0 + t / 100}, 0, 590, 10)
    assert len(made) == 1
    assert made[0].learned == [10.0 + t / 100 for t in range(0, 600, 10)]  # each once


def test_an_open_alert_of_either_rule_keeps_the_reading_out_of_learning() -> None:
    made: list[Counting] = []

    def factory() -> Counting:
        made.append(Counting())
        return made[-1]

    sim = Sim(TWO_RULES, detectors={"vib": factory})
    sim.run(PUMP, lambda t: {"vibration_mm_s": 60.0 if 100 <= t < 300 else 20.0}, 0, 590, 10)
    # Only the watch rule (>= 0.5) raises, at 130 s after its 30 s hold; while it is open
    # (until the score falls at 300 s) its detector, shared with the alarm rule, learns nothing.
    assert [(c[0], c[1], c[2]) for c in sim.changes()] == [
        (130, "pump-watch", "raised"),
        (300, "pump-watch", "cleared"),
    ]
    assert len(made) == 1
    assert made[0].learned.count(60.0) == 4  # 100-130 s: learned before the alert opened
    assert len(made[0].learned) == 60 - 17  # 140-290 s and the reading that cleared it


PUMP_RULE = ruleset(
    """\
    rules:
      - id: pump-anomaly
        kind: pump_anomaly
        devices: {kinds: [pump]}
        create:
          Moderate:
            all:
              - {score: z, op: ">=", value: 0.5}
            for: 20s
        clear: {for: 30s}
    """
)
Z = RobustZConfig(warm_up=60, window=128)


def readings(seed: int, n: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        spike = 30.0 if 400 <= i < 420 else 0.0
        out.append(
            {
                "vibration_mm_s": 2.0 + rng.gauss(0, 0.2) + spike,
                "motor_current_a": 12.0 + rng.gauss(0, 0.3),
            }
        )
    return out


def drive(sim: Sim, rows: list[dict[str, float]], start: int) -> list[float]:
    scores = []
    for i, values in enumerate(rows, start):
        sim.feed(i * 10.0, PUMP, **values)
        scores.append(sim.engine.state.devices[PUMP.id].scores["z"])
    return scores


def test_a_restored_detector_scores_like_the_original() -> None:
    rows = readings(3, 600)
    factories = {"z": lambda: build(Z)}
    whole = Sim(PUMP_RULE, detectors=factories)
    expected = drive(whole, rows, 0)

    first = Sim(PUMP_RULE, detectors=factories)
    drive(first, rows[:300], 0)
    data = first.engine.snapshot()
    second = Sim(PUMP_RULE, detectors=factories)
    second.engine = Engine.restore(PUMP_RULE, data, utc_offset_s=8 * 3600, detectors=factories)
    second.log = list(first.log)
    second.seq = dict(first.seq)
    assert second.engine.models_dropped == 0
    after = drive(second, rows[300:], 300)
    assert after == expected[300:]  # the learned baseline survived: same scores, exactly
    assert max(after) > 0.5 and second.changes() == whole.changes() != []


def test_a_model_built_from_another_configuration_is_not_restored() -> None:
    rows = readings(4, 200)
    first = Sim(PUMP_RULE, detectors={"z": lambda: build(Z)})
    drive(first, rows, 0)
    data = first.engine.snapshot()
    other = {"z": lambda: build(RobustZConfig(warm_up=60, window=256))}
    engine = Engine.restore(PUMP_RULE, data, detectors=other)
    assert engine.models_dropped == 1
    same = Engine.restore(PUMP_RULE, data, detectors={"z": lambda: build(Z)})
    assert same.models_dropped == 0
    restored = same._detectors[(PUMP.id, "z")]
    assert isinstance(restored, Protected) and restored.model.learned == 200


def test_a_snapshot_without_models_still_restores() -> None:
    """Snapshots written before models were kept (no ``detectors`` field) still load."""
    import msgspec

    from rules.engine import EngineState

    old = msgspec.msgpack.encode(
        {k: v for k, v in msgspec.structs.asdict(EngineState()).items() if k != "detectors"}
    )
    engine = Engine.restore(PUMP_RULE, old, detectors={"z": lambda: build(Z)})
    assert engine.models_dropped == 0 and engine.active() == []


def test_models_are_pickled_again_only_every_few_minutes_of_engine_time() -> None:
    """Snapshots are taken on every alert: between two picklings they carry the last ones."""
    rows = readings(5, 200)
    factories = {"z": lambda: build(Z)}
    sim = Sim(PUMP_RULE, detectors=factories)

    def learned(data: bytes) -> int:
        engine = Engine.restore(PUMP_RULE, data, detectors=factories)
        model = engine._detectors[(PUMP.id, "z")]
        assert isinstance(model, Protected)
        return model.model.learned

    drive(sim, rows[:100], 0)  # 0-990 s
    assert learned(sim.engine.snapshot()) == 100
    drive(sim, rows[100:120], 100)  # 200 s later: not due
    assert learned(sim.engine.snapshot()) == 100
    assert learned(sim.engine.snapshot(models=True)) == 120
    drive(sim, rows[120:160], 120)  # 400 s after the last pickling: due
    assert learned(sim.engine.snapshot()) == 160


def test_a_round_of_pickling_can_be_spread_and_a_snapshot_carries_the_last_whole_one() -> None:
    """The agent pickles a due round a few models a turn of its loop (a forest takes ~23 ms):
    a snapshot taken mid-round carries the last whole round, and one after it the new one."""
    pumps = [device(f"pump-{i}", "pump", unit=None, interval_s=10.0) for i in range(5)]
    factories = {"z": lambda: build(Z)}
    sim = Sim(PUMP_RULE, detectors=factories)
    rows = readings(7, 100)

    def learned(data: bytes) -> list[int]:
        engine = Engine.restore(PUMP_RULE, data, detectors=factories)
        models = [engine._detectors.get((pump.id, "z")) for pump in pumps]
        return [m.model.learned if isinstance(m, Protected) else 0 for m in models]

    def feed_all(rows: list[dict[str, float]], start: int) -> None:
        for i, values in enumerate(rows, start):
            for pump in pumps:
                sim.feed(i * 10.0, pump, **values)

    feed_all(rows[:10], 0)
    assert sim.engine.pickle_models(2) == 3, "the first round is due: 2 of 5 pickled"
    assert learned(sim.engine.snapshot(models=False)) == [0] * 5, "no whole round yet"
    assert sim.engine.pickle_models(2) == 1
    feed_all(rows[10:20], 10)  # learning goes on in between
    assert sim.engine.pickle_models(2) == 0
    assert learned(sim.engine.snapshot(models=False)) == [10, 10, 10, 10, 20]
    assert sim.engine.pickle_models(2) == 0, "not due again for MODELS_EVERY_S"
    feed_all(rows[20:60], 20)  # 400 s on: due
    assert sim.engine.pickle_models(None) == 0
    assert learned(sim.engine.snapshot(models=False)) == [60] * 5
