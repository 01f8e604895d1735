"""Durations as people write them in rule files: ``90s``, ``5min``, ``12h``, ``30d`` or seconds."""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated

from msgspec import Meta

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(s|min|h|d)\s*$"
_RE = re.compile(_PATTERN)

# A duration field accepts "90s", "5min", "12h", "30d" or a number of seconds (at most ten
# years: ``.inf`` would make a hold that never ends, or a window that keeps every sample).
MAX_SECONDS = 10 * 365 * 86400
Duration = Annotated[str, Meta(pattern=_PATTERN)] | Annotated[float, Meta(ge=0, le=MAX_SECONDS)]


@cache
def seconds(value: str | float) -> float:
    """The duration in seconds. Strings were checked by the field's pattern when loaded."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative ({value})")
        return float(value)
    match = _RE.match(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r} (write e.g. 90s, 5min, 12h, 30d)")
    total = float(match.group(1)) * _UNITS[match.group(2)]
    if total > MAX_SECONDS:
        raise ValueError(f"{value.strip()} is longer than ten years, the longest duration")
    return total


def window(value: str | float, what: str) -> float:
    """A window or a wait a condition needs: at least a second (shorter, a rate divides by
    nothing, a window holds no sample, a silence or a skew holds at every reading)."""
    total = seconds(value)
    if total < 1:
        raise ValueError(f"{what} must be at least 1s, not {value!r}")
    return total


def describe(total: float) -> str:
    """``5400`` -> ``1h30min``: how a summary shows a duration."""
    if total == 0:
        return "0s"
    parts = []
    rest = total
    for name, size in (("d", 86400), ("h", 3600), ("min", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{int(count)}{name}")
    if rest:
        parts.append(f"{rest:g}s")
    return "".join(parts)
