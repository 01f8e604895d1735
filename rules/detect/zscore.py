"""Robust streaming z-score: median and MAD (one each side of the median) per channel over a
bounded window of learned readings, recomputed every ``refresh`` readings; or, with
``scale: envelope``, the median and a high quantile of the learned readings' distance from it
(normal operation's own envelope; on SKAB it beats a fixed z, docs/detection.md)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from rules.detect.base import Channels, squash
from rules.detect.config import RobustZConfig

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution is 0.6745 sigma
MEAN_AD_TO_SIGMA = 1.2533  # mean absolute deviation: sqrt(pi / 2) sigma


class RobustZ:
    def __init__(self, config: RobustZConfig) -> None:
        self.config = config
        self.channels = Channels(config.channels)
        self._buffer: npt.NDArray[np.float64] | None = None  # (window, channels) ring
        self._next = 0
        self._filled = 0
        self._learned = 0
        self._centre: npt.NDArray[np.float64] | None = None
        self._upper: npt.NDArray[np.float64] | None = None  # scale above the median
        self._lower: npt.NDArray[np.float64] | None = None

    @property
    def warm_up(self) -> int:
        return self.config.warm_up

    @property
    def learned(self) -> int:
        return self._learned

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.channels.fix(x)
        row = self.channels.row(x)
        if row is None:
            return
        if self._buffer is None:
            self._buffer = np.zeros((self.config.window, len(row)))
        self._buffer[self._next] = row
        self._next = (self._next + 1) % self.config.window
        self._filled = min(self._filled + 1, self.config.window)
        self._learned += 1
        if self._learned >= self.config.warm_up and (
            self._centre is None or self._learned % self.config.refresh == 0
        ):
            self._refit()

    def _refit(self) -> None:
        assert self._buffer is not None
        data = self._buffer[: self._filled]
        # One sort gives the median and each side's median (a refit was ~0.5 ms with
        # nanmedian, which is most of what a pump reading cost at 8 readings a refit).
        ordered = np.sort(data, axis=0)
        n = len(ordered)
        centre = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2  # np.median's value, exactly
        if self.config.scale == "envelope":
            floor = np.maximum(1e-3 * np.abs(centre), 1e-6)
            spread = np.maximum(
                np.quantile(np.abs(data - centre), self.config.quantile, axis=0), floor
            )
            self._centre, self._upper, self._lower = centre, spread, spread
            return
        # A scale each side of the median ("double MAD"): a skewed channel, such as vibration
        # RMS (never below zero, a long upper tail), is judged by its own upper spread.
        # Neither side below the standard deviation: a quantised channel that mostly
        # reads one value (SKAB's flow) has a MAD of 0 on the side it rarely visits.
        floor = np.maximum(data.std(axis=0), np.maximum(1e-3 * np.abs(centre), 1e-6))
        self._centre = centre
        self._upper = np.maximum(_side_scale(ordered, centre, data - centre, upper=True), floor)
        self._lower = np.maximum(_side_scale(ordered, centre, centre - data, upper=False), floor)

    def score_one(self, x: Mapping[str, float]) -> float:
        if self._centre is None or self._upper is None or self._lower is None:
            return 0.0
        names = self.channels.names or ()
        worst = 0.0
        for i, name in enumerate(names):
            value = x.get(name)
            if value is None:
                continue
            d = float(value) - float(self._centre[i])
            z = d / float(self._upper[i]) if d >= 0 else -d / float(self._lower[i])
            worst = max(worst, z)
        return squash(worst / self.config.z_half)


def _side_scale(
    ordered: npt.NDArray[np.float64],
    centre: npt.NDArray[np.float64],
    side: npt.NDArray[np.float64],
    *,
    upper: bool,
) -> npt.NDArray[np.float64]:
    """Per channel, the larger of the MAD and the mean absolute deviation (each as a standard
    deviation) of the readings on one side of the median; ``side`` is each reading's distance
    from the median towards that side (negative on the other). Bit for bit what ``nanmedian``
    and ``nanmean`` give over that side's readings: in each sorted column they are a run (the
    tail above the median, or the head below it), so its median is two look-ups."""
    n, width = ordered.shape
    on_side = side >= 0
    count = on_side.sum(axis=0)
    first = n - count if upper else np.zeros(width, dtype=np.intp)
    cols = np.arange(width)
    a, b = ordered[first + (count - 1) // 2, cols], ordered[first + count // 2, cols]
    # The same subtraction as ``side`` (a - centre, not (a + b) / 2 - centre): equal bits.
    median = ((a - centre) + (b - centre)) / 2 if upper else ((centre - a) + (centre - b)) / 2
    mean = np.where(on_side, side, 0.0).sum(axis=0) / count
    result: npt.NDArray[np.float64] = np.fmax(MAD_TO_SIGMA * median, MEAN_AD_TO_SIGMA * mean)
    return result
