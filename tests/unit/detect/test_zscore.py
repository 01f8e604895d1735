"""The robust z-score's refit reads both sides' medians from one sort; it must give exactly
what numpy's nanmedian and nanmean give (the detection figures in docs/detection.md were
measured with those)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from rules.detect.config import RobustZConfig
from rules.detect.zscore import MAD_TO_SIGMA, MEAN_AD_TO_SIGMA, RobustZ

Array = npt.NDArray[np.float64]


def _reference(data: Array) -> tuple[Array, Array, Array]:
    """The refit as first written: nanmedian and nanmean over each side of the median."""
    centre = np.median(data, axis=0)
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
    return centre, scales[0], scales[1]


@pytest.mark.parametrize("shape", ["normal", "quantised", "skewed"])
def test_the_refit_equals_nanmedian_bit_for_bit(shape: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        rows, width = int(rng.integers(16, 600)), int(rng.integers(1, 8))
        if shape == "normal":
            data = rng.normal(3.0, 2.0, size=(rows, width))
        elif shape == "quantised":  # SKAB's flow: a few values, a MAD of 0 on one side
            data = rng.integers(0, 3, size=(rows, width)).astype(float)
        else:
            data = np.round(rng.exponential(size=(rows, width)), 2)
        model = RobustZ(RobustZConfig(channels=[f"c{i}" for i in range(width)], window=rows))
        model._buffer, model._filled = data, rows
        model._refit()
        centre, upper, lower = _reference(data)
        assert model._centre is not None and model._upper is not None
        assert model._lower is not None
        np.testing.assert_array_equal(model._centre, centre)
        np.testing.assert_array_equal(model._upper, upper)
        np.testing.assert_array_equal(model._lower, lower)
