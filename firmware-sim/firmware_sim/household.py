"""How real homes behave over a day: residents' routines, meals, cooking, outings.

Pure and deterministic: a household's plan for a day comes from a ``random.Random`` seeded by
(scenario seed, unit, day), so every device of the unit sees the same cooking and the same
routine, and asking in any order gives the same answer. Hours are local (the scenario's UTC
offset); weekends shift routines later.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime

DAY_S = 86400.0
WEEKEND_SHIFT_H = 0.75  # Saturdays and Sundays everyone gets up (and goes to bed) later


def local_hours(now: datetime, utc_offset_h: float) -> tuple[int, float, int]:
    """(local day number, hour of day 0..24, weekday 0=Monday) of ``now``."""
    local = now.timestamp() + utc_offset_h * 3600.0
    day = int(local // DAY_S)
    hour = (local - day * DAY_S) / 3600.0
    return day, hour, (day + 3) % 7  # 1970-01-01 was a Thursday


Window = tuple[float, float]  # local hours [start, end)


def _inside(hour: float, windows: list[Window]) -> bool:
    return any(start <= hour < end for start, end in windows)


@dataclass(frozen=True, slots=True)
class Routine:
    """One resident's habits. ``elderly`` residents stay home more and are monitored."""

    resident: str
    wake_h: float = 6.5
    sleep_h: float = 22.0
    elderly: bool = False
    works: bool = False  # out 8-18 on weekdays


@dataclass(slots=True)
class DayPlan:
    """What happens in one home on one local day."""

    wake: dict[str, float]
    sleep: dict[str, float]
    meals: list[tuple[float, float, float]]  # (start h, end h, intensity 0..1)
    out: dict[str, list[Window]]
    night_visits: dict[str, list[Window]]


@dataclass(slots=True)
class Household:
    """A unit's residents and shared rooms. ``cooks`` says the kitchen is used with gas."""

    key: str
    seed: int
    residents: list[Routine]
    utc_offset_h: float = 8.0
    cooks: bool = True
    _plans: dict[int, DayPlan] = field(default_factory=dict)

    def plan(self, day: int, weekday: int) -> DayPlan:
        found = self._plans.get(day)
        if found is not None:
            return found
        rng = random.Random(f"{self.seed}:{self.key}:day:{day}")
        weekend = weekday >= 5
        shift = WEEKEND_SHIFT_H if weekend else 0.0
        wake: dict[str, float] = {}
        sleep: dict[str, float] = {}
        out: dict[str, list[Window]] = {}
        visits: dict[str, list[Window]] = {}
        for r in self.residents:
            wake[r.resident] = r.wake_h + shift + rng.gauss(0.0, 0.25)
            sleep[r.resident] = r.sleep_h + shift / 2 + rng.gauss(0.0, 0.3)
            windows: list[Window] = []
            if r.works and not weekend:
                windows.append((8.0 + rng.uniform(-0.3, 0.3), 18.0 + rng.uniform(-0.5, 1.0)))
            elif rng.random() < (0.6 if r.elderly else 0.4):
                begin = rng.uniform(9.0, 10.5)
                windows.append((begin, begin + rng.uniform(0.5, 1.5)))
            if rng.random() < 0.5:
                begin = rng.uniform(15.0, 16.5)
                windows.append((begin, begin + rng.uniform(0.5, 1.0)))
            out[r.resident] = windows
            nights: list[Window] = []
            if rng.random() < (0.7 if r.elderly else 0.2):
                begin = rng.uniform(1.0, 4.5)
                nights.append((begin, begin + rng.uniform(0.05, 0.15)))
            visits[r.resident] = nights
        earliest = min(wake.values(), default=7.0)
        meals: list[tuple[float, float, float]] = []
        if self.cooks and self.residents:
            meals.append((earliest + 0.3, earliest + 0.3 + rng.uniform(0.25, 0.5), 0.4))
            lunch = rng.uniform(11.2, 11.8)
            meals.append((lunch, lunch + rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.9)))
            dinner = rng.uniform(17.3, 18.3)
            meals.append((dinner, dinner + rng.uniform(0.7, 1.2), rng.uniform(0.6, 1.0)))
        plan = DayPlan(wake, sleep, meals, out, visits)
        if len(self._plans) > 8:
            self._plans.clear()
        self._plans[day] = plan
        return plan

    def _plan_at(self, now: datetime) -> tuple[DayPlan, float]:
        day, hour, weekday = local_hours(now, self.utc_offset_h)
        return self.plan(day, weekday), hour

    def cooking(self, now: datetime) -> float:
        """Cooking intensity 0..1: rises over the first minutes of a meal, then falls off."""
        plan, hour = self._plan_at(now)
        for start, end, intensity in plan.meals:
            if start <= hour < end + 0.25:
                if hour < end:
                    ramp = min(1.0, (hour - start) / 0.1)
                    return intensity * ramp
                return intensity * math.exp(-(hour - end) / 0.08)  # the kitchen airs out
        return 0.0

    def asleep(self, resident: str, now: datetime) -> bool:
        plan, hour = self._plan_at(now)
        if _inside(hour, plan.night_visits.get(resident, [])):
            return False
        wake = plan.wake.get(resident, 7.0)
        sleep = plan.sleep.get(resident, 22.0)
        return hour < wake or hour >= sleep

    def home(self, resident: str, now: datetime) -> bool:
        plan, hour = self._plan_at(now)
        return not _inside(hour, plan.out.get(resident, []))

    def night_visit(self, resident: str, now: datetime) -> bool:
        plan, hour = self._plan_at(now)
        return _inside(hour, plan.night_visits.get(resident, []))

    def leaving_or_returning(self, resident: str, now: datetime, window_h: float = 0.05) -> bool:
        """Is the resident at the front door (within ``window_h`` of going out or coming in)?"""
        plan, hour = self._plan_at(now)
        return any(abs(hour - edge) < window_h for w in plan.out.get(resident, []) for edge in w)

    def activity(self, room: str | None, now: datetime) -> float:
        """Probability that a PIR in ``room`` sees motion in a minute."""
        total = 0.0
        for r in self.residents:
            if not self.home(r.resident, now):
                continue
            if self.asleep(r.resident, now):
                total += 0.02 if room == "bedroom" else 0.0
                continue
            if self.night_visit(r.resident, now):
                total += 0.9 if room in ("bathroom", "hallway") else 0.1
                continue
            base = {"kitchen": 0.25, "living": 0.5, "bedroom": 0.2, "bathroom": 0.15}
            chance = base.get(room or "living", 0.3)
            if room == "kitchen" and self.cooking(now) > 0.05:
                chance = 0.95
            total += chance
        return min(0.98, total)

    def in_bed(self, now: datetime) -> bool:
        return any(
            self.home(r.resident, now) and self.asleep(r.resident, now) for r in self.residents
        )

    def electrical_load(self, now: datetime) -> float:
        """Share 0..1 of a circuit's load: low at night, morning and evening peaks."""
        _, hour, _ = local_hours(now, self.utc_offset_h)
        return daily_load(hour)


def daily_load(hour: float) -> float:
    """A typical residential load (or water demand) curve, 0..1, by local hour."""
    morning = math.exp(-(((hour - 7.5) / 1.2) ** 2))
    evening = math.exp(-(((hour - 19.5) / 2.0) ** 2))
    return 0.15 + 0.45 * morning + 0.6 * evening
