"""Decides what is dangerous: rules, detectors and standard presets.

Pure: state, reading and time in; transitions out. No I/O and no clock, so that tests run hours
of simulated time in milliseconds against the standards' own tables.
"""

from rules.config import ConfigError, load_file, load_yaml
from rules.gas import GasRule, GasState, Transition, step
from rules.ruleset import RuleSet, load_rules

__all__ = [
    "ConfigError",
    "GasRule",
    "GasState",
    "RuleSet",
    "Transition",
    "load_file",
    "load_rules",
    "load_yaml",
    "step",
]
