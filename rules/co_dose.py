"""Carbon monoxide dose: carboxyhaemoglobin (COHb) from the Coburn-Forster-Kane equation.

The simplified form used in alarm patents (US 7,408,473), t in minutes::

    COHb(t) = COHb0 * exp(-t / (2398 B))
              + 218 * (1 - exp(-t / (2398 B))) * (0.0003 + ppm / 1316)

It is exact for a constant concentration, so a varying one is integrated piecewise: between
two readings the last concentration is held (zero-order hold) and the closed form advances the
COHb from where it was. Rising and falling CO, steps and fluctuations all accumulate as a body
would, and a short puff does not alarm while a long moderate exposure does. docs/co-model.md.
"""

from __future__ import annotations

import math

import msgspec

# Equilibrium COHb (%) at ppm: 218 * (0.0003 + ppm / 1316).
_GAIN = 218.0
_BASE = 0.0003
_PPM_SCALE = 1316.0
_TAU_PER_B = 2398.0  # minutes per unit of B


def equilibrium(ppm: float) -> float:
    """The COHb (%) a constant concentration levels off at."""
    return _GAIN * (_BASE + max(ppm, 0.0) / _PPM_SCALE)


def advance(cohb: float, ppm: float, minutes: float, work: float) -> float:
    """COHb (%) after ``minutes`` at a constant ``ppm``, starting from ``cohb``."""
    if minutes <= 0:
        return cohb
    decay = math.exp(-minutes / (_TAU_PER_B * work))
    return cohb * decay + equilibrium(ppm) * (1 - decay)


def minutes_to(target: float, ppm: float, cohb0: float, work: float) -> float:
    """Minutes at a constant ``ppm`` until COHb reaches ``target`` (inf if it never does)."""
    eq = equilibrium(ppm)
    if cohb0 >= target:
        return 0.0
    if eq <= target:
        return math.inf
    return -_TAU_PER_B * work * math.log(1 - (target - cohb0) / (eq - cohb0))


class Dose(msgspec.Struct):
    """One person's modelled COHb near one CO sensor: the value at ``at`` and the ppm since."""

    cohb: float
    ppm: float
    at: float  # seconds since the epoch (the gateway's time)

    def now(self, at: float, work: float) -> float:
        return advance(self.cohb, self.ppm, (at - self.at) / 60.0, work)

    def update(self, ppm: float, at: float, work: float) -> None:
        self.cohb = self.now(at, work)
        self.ppm = ppm
        self.at = at
