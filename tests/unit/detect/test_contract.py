"""One contract over every registered detector (river's test_estimators.py idea): determinism
for a seed, warm-up, score range, bounded memory, no learning from protected anomalies."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Iterator

import pytest

from rules.detect.base import TIME_KEY, Protected
from rules.detectors import CONFIGS, DETECTORS, PUMP_CHANNELS

NAMES = sorted(DETECTORS)


def channels(name: str) -> list[str]:
    config = CONFIGS.get(name)
    return list(config.channels) if config is not None and config.channels else ["a", "b", "c"]


def normal(name: str, seed: int = 1) -> Iterator[dict[str, float]]:
    """Correlated gaussian channels, one reading a second (one hour-of-week slot for 3600)."""
    rng = random.Random(seed)
    names = channels(name)
    t = 0.0
    while True:
        base = rng.gauss(0.0, 1.0)
        x = {n: 10.0 + i + base + rng.gauss(0.0, 0.5) for i, n in enumerate(names)}
        x[TIME_KEY] = t
        t += 1.0
        yield x


def outlier(name: str, t: float) -> dict[str, float]:
    x = {n: 10.0 + i + 40.0 for i, n in enumerate(channels(name))}
    x[TIME_KEY] = t
    return x


def feed(name: str, n: int, seed: int = 1) -> tuple[Protected, list[float]]:
    """``n`` readings past the detector's warm-up (and its learning delay)."""
    detector = DETECTORS[name]()
    assert isinstance(detector, Protected)
    n += detector.warm_up + detector.delay
    scores = []
    stream = normal(name, seed)
    for _ in range(n):
        x = next(stream)
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return detector, scores


def test_every_type_has_a_detector_registered() -> None:
    kinds = {type(c).__struct_config__.tag for c in CONFIGS.values()}
    assert kinds == {"robust_z", "seasonal", "pca", "isolation_forest"}
    assert "pump" in DETECTORS and set(CONFIGS["pump"].channels) == set(PUMP_CHANNELS)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_scores(name: str) -> None:
    assert feed(name, 400)[1] == feed(name, 400)[1]


@pytest.mark.parametrize("name", NAMES)
def test_zero_until_warmed_up_then_an_outlier_scores_high(name: str) -> None:
    detector, scores = feed(name, 300)
    warm = detector.warm_up
    assert scores[:warm] == [0.0] * warm
    assert detector.score_one(outlier(name, 300.0)) > 0.5
    assert sum(s > 0.5 for s in scores[warm + 50 :]) <= 0.1 * len(scores[warm + 50 :])


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_between_0_and_1(name: str) -> None:
    detector, scores = feed(name, 300)
    extremes = [outlier(name, 301.0), {n: 1e12 for n in channels(name)}, {TIME_KEY: 5.0}]
    extremes[1][TIME_KEY] = 302.0
    for x in extremes:
        scores.append(detector.score_one(x))
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in scores)


@pytest.mark.parametrize("name", NAMES)
def test_memory_is_bounded(name: str) -> None:
    detector = DETECTORS[name]()
    assert isinstance(detector, Protected)
    stream = normal(name)
    sizes = []
    for n in (1000, 2000, 4000):
        while detector.model.learned < n:
            detector.learn_one(next(stream))
        sizes.append(len(pickle.dumps(detector)))
    assert sizes[2] <= sizes[1] * 1.1 + 4096, sizes


@pytest.mark.parametrize("name", NAMES)
def test_protected_anomalies_are_not_learned(name: str) -> None:
    detector, _ = feed(name, 400)
    before = pickle.dumps(detector.model)
    for k in range(50):
        detector.learn_one(outlier(name, 400.0 + k))
    assert pickle.dumps(detector.model) == before
    assert detector.protected >= 50
