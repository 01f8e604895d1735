"""The NAB scoring method, as ../shared/STANDARDS.md states it (Numenta Anomaly Benchmark).

A window is 10 % of the series length divided by the number of labels, centred on each label
(overlapping windows merge). Only the first detection in a window counts, weighted by the
scaled sigmoid ``2 / (1 + exp(5 y)) - 1`` with y = -1 at the window's left edge and 0 at its
right edge (NAB's ``-(right - i + 1) / width``); a detection outside every window costs the
false-positive weight; a window with no detection costs the false-negative weight. The first
15 % of a series (at most 750 rows) is probation: detections there are not scored. Scores are
normalised over a corpus so that a detector that never fires scores 0 and a perfect one (a
detection on each window's first scored row) 100.

NAB's reference code also discounts a false positive shortly after a window; the standard's
text does not, so neither does this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Window = tuple[int, int]  # first and last row, inclusive


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    tp: float
    fn: float
    fp: float


PROFILES = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP", 1.0, 1.0, 0.22),
    Profile("reward_low_FN", 1.0, 2.0, 0.11),
)


def scaled_sigmoid(y: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation(length: int) -> int:
    return min(math.floor(0.15 * length), 750)


def windows(length: int, labels: Sequence[int]) -> list[Window]:
    """NAB windows around each labelled row, clipped to the series, overlapping ones merged."""
    if not labels or length <= 0:
        return []
    width = int(0.1 * length / len(labels))
    half = width // 2
    out: list[Window] = []
    for label in sorted(labels):
        left, right = max(0, label - half), min(length - 1, label + half)
        if out and left <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], right))
        else:
            out.append((left, right))
    return out


@dataclass(slots=True)
class Counts:
    """One series under one profile: its raw score and what made it."""

    score: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


def score_series(
    length: int, spans: Sequence[Window], detections: Iterable[int], profile: Profile
) -> Counts:
    start = probation(length)
    found: set[int] = set()
    counts = Counts()
    for row in sorted(set(detections)):
        if row < start or row >= length:
            continue
        index = next((k for k, (lo, hi) in enumerate(spans) if lo <= row <= hi), None)
        if index is None:
            counts.score -= profile.fp
            counts.fp += 1
        elif index not in found:
            found.add(index)
            left, right = spans[index]
            y = -(right - row + 1) / (right - left + 1)
            counts.score += profile.tp * scaled_sigmoid(y)
            counts.tp += 1
    counts.fn = len(spans) - len(found)
    counts.score -= profile.fn * counts.fn
    return counts


def perfect_detections(length: int, spans: Sequence[Window]) -> list[int]:
    """A detection on each window's first row that probation lets count."""
    start = probation(length)
    return [max(lo, start) for lo, hi in spans if hi >= start]


@dataclass(frozen=True, slots=True)
class SeriesInput:
    length: int
    labels: Sequence[int]  # rows labelled anomalous (NAB's label points)
    detections: Sequence[int]  # rows where the detector (the rule) raised an alert


def normalised(series: Sequence[SeriesInput], profile: Profile) -> float:
    """100 * (S - S_null) / (S_perfect - S_null), summed over the corpus."""
    raw = null = perfect = 0.0
    for s in series:
        spans = windows(s.length, s.labels)
        raw += score_series(s.length, spans, s.detections, profile).score
        null += score_series(s.length, spans, [], profile).score
        perfect += score_series(s.length, spans, perfect_detections(s.length, spans), profile).score
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)
