"""The hook for anomaly detectors: a ``score`` condition reads a named detector's 0..1 score.

Detectors follow river's shape: ``learn_one(x)`` updates, ``score_one(x)`` has no side effects
and returns 0..1 (high = anomalous; 0 until warmed up). They are registered by the same name
the rule file uses (``score: pump-vibration``). The detectors themselves arrive with the
anomaly-detection issue; this module is the contract the engine calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol


class Detector(Protocol):
    def learn_one(self, x: Mapping[str, float]) -> None: ...

    def score_one(self, x: Mapping[str, float]) -> float: ...


DetectorFactory = Callable[[], Detector]

# name -> factory; one detector instance is made per device that a rule scores.
DETECTORS: dict[str, DetectorFactory] = {}


def register(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    def add(factory: DetectorFactory) -> DetectorFactory:
        if name in DETECTORS:
            raise ValueError(f"a detector named {name!r} is already registered")
        DETECTORS[name] = factory
        return factory

    return add
