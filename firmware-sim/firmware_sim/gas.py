"""A simulated methane detector with a siren and a gas shut-off valve.

Pure model: no I/O, time is passed in, noise comes from a seeded ``random.Random``. So a unit
test can drive hours of simulated readings in milliseconds, and the same seed gives the same
readings.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import wire

# Above this, a leak is "really there": the ground truth that detectors are scored against.
LEAK_TRUTH_LEL = 10.0
MAX_LEL = 100.0


@dataclass(frozen=True, slots=True)
class Leak:
    """A leak scenario: gas rises from ``start`` at ``rise_per_s`` up to ``peak_lel``.

    With ``duration_s`` the source stops after that long and the gas decays back to baseline.
    """

    start: datetime
    rise_per_s: float
    peak_lel: float
    duration_s: float | None = None

    def source_active(self, at: datetime) -> bool:
        if at < self.start:
            return False
        return self.duration_s is None or (at - self.start).total_seconds() < self.duration_s

    def breakpoints(self) -> list[datetime]:
        """Times at which the source switches on or off."""
        points = [self.start]
        if self.duration_s is not None:
            points.append(_plus(self.start, self.duration_s))
        return points


def _plus(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)


class GasSensor:
    """Methane in %LEL: Gaussian noise around a baseline, plus the gas of a leak if one is set.

    The leak's gas (above baseline) is a function of time and of the valve's history: it is
    integrated exactly, piece by piece between events (leak start/stop, valve changes), so the
    concentration at a time does not depend on how often or in what order it was asked for.
    Rising is linear up to the peak; decay is exponential with ``decay_tau_s`` (ventilation).
    A closed valve cuts the source, so the gas decays.
    """

    kind = "gas"

    def __init__(
        self,
        device_id: str,
        seed: int,
        *,
        baseline_lel: float = 0.5,
        noise_lel: float = 0.15,
        interval_s: float = 1.0,
        decay_tau_s: float = 20.0,
    ) -> None:
        wire.topics.check_id(device_id, "device")
        self.device_id = device_id
        self.baseline_lel = baseline_lel
        self.noise_lel = noise_lel
        self.interval_s = interval_s
        self.decay_tau_s = decay_tau_s
        self.siren = False
        self.valve_closed = False
        self.commands: list[wire.Command] = []
        self._random = random.Random(seed)
        self._seq = 0
        self._leak: Leak | None = None
        # (when, closed) for each valve command, in time order: the gas depends on the history.
        self._valve: list[tuple[datetime, bool]] = []

    # Scenario and commands

    def leak(
        self,
        start: datetime,
        rise_per_s: float,
        peak_lel: float,
        duration_s: float | None = None,
    ) -> Leak:
        """Schedule a leak (replacing any earlier one)."""
        if rise_per_s <= 0 or not 0 < peak_lel <= MAX_LEL:
            raise ValueError("a leak needs rise_per_s > 0 and 0 < peak_lel <= 100")
        self._leak = Leak(start, rise_per_s, peak_lel, duration_s)
        return self._leak

    def apply(self, cmd: wire.Command, now: datetime | None = None) -> None:
        """Carry out a command; ``now`` defaults to the command's own ``ts``.

        Actions this device does not have (play, stop) are recorded and otherwise ignored.
        """
        at = cmd.ts if now is None else now
        self.commands.append(cmd)
        match cmd.action:
            case "siren_on":
                self.siren = True
            case "siren_off":
                self.siren = False
            case "valve_close" | "valve_open":
                self.valve_closed = cmd.action == "valve_close"
                bisect.insort(self._valve, (at, self.valve_closed), key=lambda change: change[0])
            case _:
                pass

    # Observations

    def concentration(self, now: datetime) -> float:
        """The noiseless %LEL at ``now`` (what is really in the air)."""
        return min(MAX_LEL, self.baseline_lel + self._excess(now))

    def truth(self, now: datetime) -> bool:
        """Is a leak above 10 %LEL actually present? Draws no noise, so it changes nothing."""
        return self._excess(now) > 0 and self.concentration(now) > LEAK_TRUTH_LEL

    def reading(self, now: datetime) -> wire.Reading:
        noisy = self.concentration(now) + self._random.gauss(0.0, self.noise_lel)
        value = round(min(MAX_LEL, max(0.0, noisy)), 3)
        reading = wire.Reading(
            device=self.device_id, seq=self._seq, ts=now, values={"gas_lel": value}
        )
        self._seq += 1
        return reading

    def status(
        self, now: datetime, state: Literal["online", "offline"] = "online"
    ) -> wire.DeviceStatus:
        return wire.DeviceStatus(
            device=self.device_id,
            state=state,
            ts=now,
            kind=self.kind,
            actuators={
                "siren": "on" if self.siren else "off",
                "valve": "closed" if self.valve_closed else "open",
            },
        )

    # The leak's gas over time

    def _excess(self, at: datetime) -> float:
        leak = self._leak
        if leak is None or at <= leak.start:
            return 0.0
        events = [*leak.breakpoints(), *(when for when, _ in self._valve)]
        cuts = sorted({leak.start, *(e for e in events if leak.start < e < at), at})
        excess = 0.0
        for begin, end in itertools.pairwise(cuts):
            excess = self._evolve(leak, excess, begin, (end - begin).total_seconds())
        return excess

    def _valve_closed_at(self, at: datetime) -> bool:
        index = bisect.bisect_right(self._valve, at, key=lambda change: change[0])
        return index > 0 and self._valve[index - 1][1]

    def _evolve(self, leak: Leak, excess: float, begin: datetime, seconds: float) -> float:
        """The excess after ``seconds`` in one regime (source and valve unchanged throughout)."""
        if leak.source_active(begin) and not self._valve_closed_at(begin):
            peak = max(0.0, leak.peak_lel - self.baseline_lel)
            return min(peak, excess + leak.rise_per_s * seconds)
        return excess * math.exp(-seconds / self.decay_tau_s)
