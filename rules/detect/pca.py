"""Streaming PCA with Hotelling's T-squared and Q (squared prediction error): exponentially
weighted mean and covariance, standardised to correlations, eigendecomposed every
``refresh`` learned readings. Control limits: T-squared ~ chi-squared(a) and Q by Box's
g chi-squared(h) approximation, both through the Wilson-Hilferty quantile (no scipy)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from rules.detect.base import Channels, squash
from rules.detect.config import PcaConfig

Vector = npt.NDArray[np.float64]


def chi2_quantile(p: float, dof: float) -> float:
    """Wilson-Hilferty: within about 1 % of the exact quantile for dof >= 1 at p <= 0.999."""
    z = NormalDist().inv_cdf(p)
    c = 2.0 / (9.0 * dof)
    return float(dof * max(1.0 - c + z * math.sqrt(c), 0.0) ** 3)


class Pca:
    def __init__(self, config: PcaConfig) -> None:
        self.config = config
        self.channels = Channels(config.channels)
        self._alpha = 1.0 - 0.5 ** (1.0 / config.halflife)
        self._mean: Vector | None = None
        self._cov: Vector | None = None
        self._learned = 0
        self._model: tuple[Vector, Vector, Vector, Vector, float, float] | None = None

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
        v = np.asarray(row)
        self._learned += 1
        if self._mean is None or self._cov is None:
            self._mean, self._cov = v.copy(), np.zeros((len(v), len(v)))
        else:
            alpha = max(1.0 / self._learned, self._alpha)
            delta = v - self._mean
            self._mean += alpha * delta
            self._cov = (1.0 - alpha) * (self._cov + alpha * np.outer(delta, delta))
        if self._learned >= self.config.warm_up and (
            self._model is None or self._learned % self.config.refresh == 0
        ):
            self._refit()

    def _refit(self) -> None:
        assert self._mean is not None and self._cov is not None
        mean = self._mean
        floor = np.maximum(1e-3 * np.abs(mean), 1e-6)
        sd = np.maximum(np.sqrt(np.clip(np.diag(self._cov), 0.0, None)), floor)
        corr = self._cov / np.outer(sd, sd)
        values, vectors = np.linalg.eigh(corr)
        order = np.argsort(values)[::-1]
        values = np.clip(values[order], 1e-6, None)
        vectors = vectors[:, order]
        k = len(values)
        share = np.cumsum(values) / values.sum()
        a = int(np.searchsorted(share, self.config.variance) + 1)
        a = max(1, min(a, k - 1)) if k > 1 else 1
        level = self.config.level
        t_limit = chi2_quantile(level, a)
        rest = values[a:]
        if rest.size:
            theta1, theta2 = float(rest.sum()), float((rest**2).sum())
            g, h = theta2 / theta1, theta1 * theta1 / theta2
            q_limit = g * chi2_quantile(level, h)
        else:
            q_limit = math.inf
        self._model = (mean.copy(), sd, vectors[:, :a], values[:a], t_limit, q_limit)

    def score_one(self, x: Mapping[str, float]) -> float:
        if self._model is None:
            return 0.0
        row = self.channels.row(x)
        if row is None:
            return 0.0
        mean, sd, loadings, values, t_limit, q_limit = self._model
        z = (np.asarray(row) - mean) / sd
        t = loadings.T @ z
        t2 = float(np.sum(t * t / values))
        residual = z - loadings @ t
        q = float(residual @ residual)
        return squash(max(t2 / t_limit, q / q_limit))
