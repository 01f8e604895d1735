"""scikit-learn's IsolationForest on a bounded window of learned readings.

The refit is synchronous, every ``refit_every`` learned readings, inside ``learn_one``: a
background thread would make scores depend on thread timing, and the contract test asks for
the same scores from the same seed. scikit-learn is imported when the first forest is fitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from rules.detect.base import Channels, squash
from rules.detect.config import IsolationForestConfig


class IsolationForest:
    def __init__(self, config: IsolationForestConfig) -> None:
        self.config = config
        self.channels = Channels(config.channels)
        self._window: deque[list[float]] = deque(maxlen=config.window)
        self._learned = 0
        self._since_fit = 0
        self._forest: Any = None
        self._median = 0.0
        self._limit = 1.0
        self.fits = 0

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
        self._window.append(row)
        self._learned += 1
        self._since_fit += 1
        due = self._forest is None and self._learned >= self.config.warm_up
        if due or (self._forest is not None and self._since_fit >= self.config.refit_every):
            self._fit()

    def _fit(self) -> None:
        from sklearn.ensemble import IsolationForest as Forest

        data = np.asarray(self._window)
        forest = Forest(
            n_estimators=self.config.trees,
            max_samples=min(256, len(data)),
            random_state=self.config.seed,
        ).fit(data)
        # score_samples is minus the paper's anomaly score s (0..1, about 0.5 and below normal)
        own = -forest.score_samples(data)
        self._median = float(np.median(own))
        self._limit = max(float(np.quantile(own, self.config.level)) - self._median, 1e-6)
        self._forest = forest
        self._since_fit = 0
        self.fits += 1

    def score_one(self, x: Mapping[str, float]) -> float:
        if self._forest is None:
            return 0.0
        row = self.channels.row(x)
        if row is None:
            return 0.0
        s = -float(self._forest.score_samples(np.asarray([row]))[0])
        return squash((s - self._median) / self._limit)
