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
        centre = np.median(data, axis=0)
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
        scales = []
        for side in (data - centre, centre - data):
            spread = np.where(side >= 0, side, np.nan)
            scales.append(
                np.maximum(
                    np.fmax(
                        MAD_TO_SIGMA * np.nanmedian(spread, axis=0),
                        MEAN_AD_TO_SIGMA * np.nanmean(spread, axis=0),
                    ),
                    floor,
                )
            )
        self._centre, self._upper, self._lower = centre, scales[0], scales[1]

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
