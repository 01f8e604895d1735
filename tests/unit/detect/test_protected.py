"""The learning filter's options: a delayed learning that drops the onset of an anomaly, a
frozen baseline, and the envelope scale of the robust z-score."""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping

from rules.detect.base import Protected
from rules.detect.config import RobustZConfig
from rules.detectors import build


class Recorder:
    """A stand-in model: warm after 3 readings, scores the value itself, records what it learns."""

    warm_up = 3

    def __init__(self) -> None:
        self.seen: list[float] = []

    @property
    def learned(self) -> int:
        return len(self.seen)

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.seen.append(x["v"])

    def score_one(self, x: Mapping[str, float]) -> float:
        return x["v"] if self.learned >= self.warm_up else 0.0


def run(filter: Protected, values: list[float]) -> None:
    for v in values:
        x = {"v": v}
        filter.score_one(x)
        filter.learn_one(x)


def test_a_delayed_reading_is_learned_only_after_enough_normal_ones_follow() -> None:
    model = Recorder()
    filter = Protected(model, 0.5, delay=2)
    run(filter, [0.0, 0.0, 0.0])  # the warm-up is learned at once
    run(filter, [0.1, 0.2, 0.3])
    assert model.seen == [0.0, 0.0, 0.0, 0.1]  # 0.2 and 0.3 wait for two more normal ones
    run(filter, [0.4, 0.9])  # a high score: the readings leading into it are dropped
    assert model.seen == [0.0, 0.0, 0.0, 0.1, 0.2]
    assert filter.protected == 3  # 0.3, 0.4 and 0.9
    run(filter, [0.1, 0.1, 0.1])
    assert model.seen == [0.0, 0.0, 0.0, 0.1, 0.2, 0.1]


def test_a_frozen_baseline_learns_nothing_after_the_warm_up() -> None:
    model = Recorder()
    filter = Protected(model, 0.5, freeze=True)
    run(filter, [0.0, 0.1, 0.2, 0.3, 0.1])
    assert model.seen == [0.0, 0.1, 0.2]


def test_the_envelope_scale_is_each_channels_own_spread() -> None:
    """0.5 where a channel is ``z_half`` times its learned 99.5 % distance from the median:
    a quiet channel and a noisy one alarm at their own levels."""
    rng = random.Random(5)
    detector = build(RobustZConfig(scale="envelope", z_half=2.0, warm_up=400, window=512))
    for _ in range(400):
        x = {"quiet": 1.0 + rng.uniform(-0.01, 0.01), "noisy": 5.0 + rng.uniform(-1.0, 1.0)}
        detector.score_one(x)
        detector.learn_one(x)
    assert detector.score_one({"quiet": 1.0, "noisy": 5.0}) < 0.05
    assert 0.4 < detector.score_one({"quiet": 1.02, "noisy": 5.0}) < 0.6  # 2 envelopes
    assert detector.score_one({"quiet": 1.0, "noisy": 6.5}) < 0.5  # noisy is allowed more
    assert detector.score_one({"quiet": 1.0, "noisy": 8.0}) > 0.5


def test_a_delayed_detector_pickles_its_waiting_readings() -> None:
    detector = build(RobustZConfig(warm_up=16, delay=5))
    for i in range(30):
        x = {"a": float(i % 3)}
        detector.score_one(x)
        detector.learn_one(x)
    copy = pickle.loads(pickle.dumps(detector))  # noqa: S301 - our own bytes
    assert isinstance(copy, Protected) and len(copy._pending) == 5
    assert copy.model.learned == detector.model.learned == 25
