"""A rule set: the rules one gateway runs, as a person writes them (strictly validated).

A file either lists ``rules`` (and may ``include`` shipped presets by name), or, as before the
rule language, has only a ``gas`` section, which then runs as the two-level gas rule.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from rules.config import ConfigError, load_file
from rules.gas import GasRule
from rules.language import RoutineTimes, Rule

PRESETS = Path(__file__).parent / "presets"
_OFFSET = r"^[+-](0\d|1[0-4]):[0-5]\d$"


def utc_offset_seconds(text: str) -> float:
    match = re.match(r"^([+-])(\d\d):(\d\d)$", text)
    if match is None:
        raise ValueError(f"not a UTC offset: {text!r} (write e.g. +08:00)")
    sign = -1 if match.group(1) == "-" else 1
    return sign * (int(match.group(2)) * 3600 + int(match.group(3)) * 60)


class RuleSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Literal[1] = 1
    # The legacy gas section: runs (as rule "gas-lel") only in a file with no rules/include.
    gas: GasRule = GasRule()
    # Local time for "hours" and routines; China's is +08:00.
    utc_offset: Annotated[str, Meta(pattern=_OFFSET)] = "+08:00"
    include: list[Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]] = []
    rules: list[Rule] = []
    # Usual times of a resident (or a flat, "building/unit"): "not up by" checks (``inactive``
    # with ``wake``) use them instead of the rule's. Local time.
    routines: list[RoutineTimes] = []

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears twice; ids name alerts")
            seen.add(rule.id)
        keys: set[str] = set()
        for times in self.routines:
            if times.key in keys:
                raise ValueError(f"routines: {times.key!r} appears twice")
            keys.add(times.key)
        for name in self.include:
            if name not in preset_names():
                raise ValueError(f"no preset named {name!r}; shipped: {', '.join(preset_names())}")

    def resolved(self) -> list[Rule]:
        """The rules to run: included presets first, then this file's own (which replace a
        preset's rule of the same id)."""
        if not self.rules and not self.include:
            return [self.gas.as_rule()]
        own = {rule.id for rule in self.rules}
        out: list[Rule] = []
        for name in self.include:
            out += [r for r in load_preset(name).resolved() if r.id not in own]
        return out + list(self.rules)


def load_rules(path: Path) -> RuleSet:
    return load_file(path, RuleSet)


@cache
def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESETS.glob("*.yaml")))


@cache
def load_preset(name: str) -> RuleSet:
    """A shipped preset by name (its file is rules/presets/NAME.yaml)."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(str(path), None, "", f"no preset named {name!r}")
    return load_rules(path)
