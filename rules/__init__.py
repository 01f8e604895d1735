"""Decides what is dangerous: rules, detectors and standard presets.

Pure: state, reading and time in; transitions out. No I/O (except loading rule files) and no
clock, so that tests run hours of simulated time in milliseconds against the standards' own
tables. Start with ``Engine`` (rules/engine.py) and docs/rules.md.
"""

from rules.config import ConfigError, load_file, load_yaml
from rules.engine import Engine, EngineError
from rules.gas import GasRule, GasState, step
from rules.language import Action, Condition, Level, Rule
from rules.ruleset import RuleSet, load_preset, load_rules, preset_names
from rules.transition import Transition

__all__ = [
    "Action",
    "Condition",
    "ConfigError",
    "Engine",
    "EngineError",
    "GasRule",
    "GasState",
    "Level",
    "Rule",
    "RuleSet",
    "Transition",
    "load_file",
    "load_preset",
    "load_rules",
    "load_yaml",
    "preset_names",
    "step",
]
