"""Seasonal baseline: an exponentially weighted mean and variance per hour of the week (or of
the day) and channel, so that a routine or a daily cycle is compared with its own hour."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rules.detect.base import TIME_KEY, Channels, squash
from rules.detect.config import SeasonalConfig

WEEK_EPOCH_OFFSET_H = 72  # 1970-01-01 was a Thursday: hour 0 of the week is Monday 00:00


def hour_slot(local_s: float, period: str) -> int:
    hours = int(local_s // 3600)
    if period == "day":
        return hours % 24
    return (hours + WEEK_EPOCH_OFFSET_H) % 168


class Seasonal:
    def __init__(self, config: SeasonalConfig) -> None:
        self.config = config
        self.channels = Channels(config.channels)
        slots = 168 if config.period == "week" else 24
        self._count = [0] * slots
        self._mean: list[list[float]] = [[] for _ in range(slots)]
        self._var: list[list[float]] = [[] for _ in range(slots)]
        self._learned = 0

    @property
    def warm_up(self) -> int:
        return self.config.warm_up

    @property
    def learned(self) -> int:
        return self._learned

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.channels.fix(x)
        row = self.channels.row(x)
        at = x.get(TIME_KEY)
        if row is None or at is None:
            return
        slot = hour_slot(at, self.config.period)
        n = self._count[slot] = self._count[slot] + 1
        alpha = max(1.0 / n, 1.0 / self.config.memory)
        if n == 1:
            self._mean[slot] = list(row)
            self._var[slot] = [0.0] * len(row)
        else:
            mean, var = self._mean[slot], self._var[slot]
            for i, value in enumerate(row):
                delta = value - mean[i]
                mean[i] += alpha * delta
                var[i] = (1.0 - alpha) * (var[i] + alpha * delta * delta)
        self._learned += 1

    def score_one(self, x: Mapping[str, float]) -> float:
        at = x.get(TIME_KEY)
        if at is None or not self.channels.names:
            return 0.0
        slot = hour_slot(at, self.config.period)
        if self._count[slot] < self.config.warm_up:
            return 0.0
        mean, var = self._mean[slot], self._var[slot]
        worst = 0.0
        for i, name in enumerate(self.channels.names):
            value = x.get(name)
            if value is None:
                continue
            floor = max(1e-3 * abs(mean[i]), 1e-6)
            z = abs(float(value) - mean[i]) / max(math.sqrt(var[i]), floor)
            worst = max(worst, z)
        return squash(worst / self.config.z_half)
