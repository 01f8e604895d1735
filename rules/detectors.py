"""The detector hook and registry: a ``score`` condition reads a named detector's 0..1 score.

Detectors follow river's shape: ``learn_one(x)`` updates, ``score_one(x)`` has no side effects
and returns 0..1 (high = anomalous; 0 until warmed up). A rule names one (``score: pump``);
the engine makes one instance per device from the factory registered under that name, scores
every reading, then learns it unless the rule's alert is open.

Built-in names are configurations (rules/detect/config.py, a union tagged by ``type``, the
key of ``TYPES``); ``register_config`` adds one, ``register`` any factory. Building imports
numpy (and scikit-learn for ``isolation_forest``) only then. docs/detection.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Protocol

from rules.detect.base import TIME_KEY, Protected
from rules.detect.config import (
    TYPES,
    AnyDetectorConfig,
    DetectorConfig,
    IsolationForestConfig,
    PcaConfig,
    RobustZConfig,
    SeasonalConfig,
)

__all__ = [
    "CONFIGS",
    "DETECTORS",
    "TIME_KEY",
    "TYPES",
    "AnyDetectorConfig",
    "Detector",
    "DetectorFactory",
    "build",
    "register",
    "register_config",
]


class Detector(Protocol):
    def learn_one(self, x: Mapping[str, float]) -> None: ...

    def score_one(self, x: Mapping[str, float]) -> float: ...


DetectorFactory = Callable[[], Detector]

# name -> factory; one detector instance is made per device that a rule scores.
DETECTORS: dict[str, DetectorFactory] = {}
# name -> its configuration, for the names registered by ``register_config``.
CONFIGS: dict[str, DetectorConfig] = {}


def register(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    def add(factory: DetectorFactory) -> DetectorFactory:
        if name in DETECTORS:
            raise ValueError(f"a detector named {name!r} is already registered")
        DETECTORS[name] = factory
        return factory

    return add


def build(config: DetectorConfig) -> Protected:
    """A detector for one stream, wrapped in the filter that keeps anomalies out of learning."""
    if isinstance(config, RobustZConfig):
        from rules.detect.zscore import RobustZ

        return Protected(RobustZ(config), config.protect, freeze=config.freeze, delay=config.delay)
    if isinstance(config, SeasonalConfig):
        from rules.detect.seasonal import Seasonal

        return Protected(Seasonal(config), config.protect, freeze=config.freeze, delay=config.delay)
    if isinstance(config, PcaConfig):
        from rules.detect.pca import Pca

        return Protected(Pca(config), config.protect, freeze=config.freeze, delay=config.delay)
    if isinstance(config, IsolationForestConfig):
        from rules.detect.forest import IsolationForest

        return Protected(
            IsolationForest(config), config.protect, freeze=config.freeze, delay=config.delay
        )
    raise TypeError(f"no detector type for {type(config).__name__}")


def register_config(name: str, config: DetectorConfig) -> None:
    register(name)(partial(build, config))
    CONFIGS[name] = config


# The water-supply pump's condition channels, by the names the simulator and the SKAB test bed
# (docs/detection.md) report. Temperatures are left out: they drift with load and ambient, and
# the thresholds in the pump and heat presets already cover them.
PUMP_CHANNELS = [
    "vibration_mm_s",
    "accel_1_rms_g",
    "accel_2_rms_g",
    "motor_current_a",
    "pressure_bar",
    "voltage_v",
    "flow_m3h",
]

for _name, _config in {
    "robust_z": RobustZConfig(),
    "seasonal": SeasonalConfig(),
    "pca": PcaConfig(),
    "isolation_forest": IsolationForestConfig(),
    "pump": RobustZConfig(channels=PUMP_CHANNELS),
    "pump_pca": PcaConfig(channels=PUMP_CHANNELS),
    "pump_forest": IsolationForestConfig(channels=PUMP_CHANNELS),
    # Tuned on SKAB's tuning split (docs/detection.md): each channel's own normal envelope
    # (median +- the 99.5 % quantile of |x - median|), 0.5 at 1.75 envelopes; a 400-reading
    # baseline (SKAB's training part; 67 min at a 10 s report); a reading is learned only
    # after 60 more normal ones, so the slow onset of a fault is not learned either.
    "pump_envelope": RobustZConfig(
        channels=PUMP_CHANNELS,
        scale="envelope",
        quantile=0.995,
        z_half=1.75,
        window=2048,
        warm_up=400,
        delay=60,
    ),
}.items():
    register_config(_name, _config)
