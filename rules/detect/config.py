"""Detector configurations: a tagged union keyed by ``type`` (the registry's key, as Frigate's
``detector_types``), strict like every file people write."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Probability = Annotated[float, Meta(gt=0.5, lt=1.0)]


class DetectorConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    # The values to read (those present in the first reading); empty: every value.
    channels: list[Annotated[str, Meta(min_length=1, max_length=64)]] = []
    # Readings scoring at least this are kept out of learning (the filter, rules/detect/base).
    protect: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.5
    seed: int = 0
    # Stop learning once warmed up: the warm-up readings are the baseline (commissioning).
    freeze: bool = False
    # Learn a reading only after this many later readings were normal too (rules/detect/base).
    delay: Annotated[int, Meta(ge=0, le=3600)] = 0


class RobustZConfig(DetectorConfig, frozen=True, kw_only=True, tag="robust_z"):
    """Per channel |x - median| over a scale, from the last ``window`` learned readings; the
    score is the largest channel's, 0.5 at ``z_half`` scales. The scale is the MAD as a
    standard deviation (``mad``), or the ``quantile`` of the learned readings' own
    |x - median| (``envelope``: the spread normal operation actually shows on that channel)."""

    window: Annotated[int, Meta(ge=16, le=100_000)] = 512
    warm_up: Annotated[int, Meta(ge=8)] = 60
    refresh: Annotated[int, Meta(ge=1, le=1000)] = 8  # recompute median/scale every N learned
    z_half: Annotated[float, Meta(gt=0)] = 4.0
    scale: Literal["mad", "envelope"] = "mad"
    quantile: Annotated[float, Meta(gt=0.5, le=1.0)] = 0.995  # for ``envelope``


class SeasonalConfig(DetectorConfig, frozen=True, kw_only=True, tag="seasonal"):
    """A baseline per hour of the week (or of the day): exponentially weighted mean and
    variance per hour and channel; a reading is scored against its own hour's baseline."""

    period: Literal["week", "day"] = "week"
    memory: Annotated[float, Meta(ge=2)] = 50.0  # readings an hour's baseline remembers
    warm_up: Annotated[int, Meta(ge=2)] = 20  # readings in an hour before it scores
    z_half: Annotated[float, Meta(gt=0)] = 4.0


class PcaConfig(DetectorConfig, frozen=True, kw_only=True, tag="pca"):
    """Streaming PCA on exponentially weighted correlations: Hotelling's T-squared in the
    principal subspace and Q (squared prediction error) outside it; 0.5 at the ``level``
    control limit of the larger."""

    halflife: Annotated[float, Meta(ge=10)] = 500.0  # readings
    warm_up: Annotated[int, Meta(ge=10)] = 100
    variance: Annotated[float, Meta(gt=0, lt=1)] = 0.9  # share the principal subspace keeps
    refresh: Annotated[int, Meta(ge=1, le=1000)] = 10  # eigendecomposition every N learned
    level: Probability = 0.999


class IsolationForestConfig(DetectorConfig, frozen=True, kw_only=True, tag="isolation_forest"):
    """scikit-learn's IsolationForest, refit synchronously every ``refit_every`` learned
    readings on the last ``window`` of them; 0.5 at the ``level`` quantile of the window's
    own scores."""

    window: Annotated[int, Meta(ge=32, le=10_000)] = 256
    refit_every: Annotated[int, Meta(ge=1)] = 256
    warm_up: Annotated[int, Meta(ge=32)] = 128
    trees: Annotated[int, Meta(ge=10, le=500)] = 50
    level: Probability = 0.95


AnyDetectorConfig = RobustZConfig | SeasonalConfig | PcaConfig | IsolationForestConfig

TYPES: dict[str, type[DetectorConfig]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (RobustZConfig, SeasonalConfig, PcaConfig, IsolationForestConfig)
}
