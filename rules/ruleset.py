"""A rule set: the rules one gateway runs, as a person writes them (strictly validated)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from rules.config import load_file
from rules.gas import GasRule


class RuleSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Literal[1] = 1
    gas: GasRule = GasRule()


def load_rules(path: Path) -> RuleSet:
    return load_file(path, RuleSet)
