"""Drive the rule engine with simulated time: devices, readings and ticks, no clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from rules import Engine, Rule, RuleSet, Transition, load_preset
from rules.detectors import DetectorFactory
from wire import Phase, Reading
from wire.metrics import split_by_range
from wire.replay import DeviceInfo

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Beijing


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def device(
    id: str,
    kind: str,
    *,
    unit: str | None = "101",
    room: str | None = None,
    resident: str | None = None,
    interval_s: float = 60.0,
    building: str = "b1",
) -> DeviceInfo:
    return DeviceInfo(
        id=id,
        kind=kind,
        site="s1",
        gateway="gw-1",
        building=building,
        unit=unit,
        room=room,
        resident=resident,
        interval_s=interval_s,
    )


class Sim:
    """An engine plus a record of every transition with its time in seconds from T0."""

    def __init__(
        self,
        rules: str | RuleSet | Sequence[Rule],
        *,
        utc_offset_s: float = 8 * 3600,
        detectors: Mapping[str, DetectorFactory] | None = None,
        split_range: bool = False,
    ) -> None:
        """``split_range``: values outside their physical range are split off each reading as
        the edge's ingest does (a faulted channel), not fed as they came."""
        ruleset = load_preset(rules) if isinstance(rules, str) else rules
        self.engine = Engine(ruleset, utc_offset_s=utc_offset_s, detectors=detectors)
        self.split_range = split_range
        self.seq: dict[str, int] = {}
        self.log: list[tuple[float, Transition]] = []
        self.now = 0.0

    def feed(self, t: float, dev: DeviceInfo, skew_s: float = 0.0, **values: float) -> None:
        seq = self.seq[dev.id] = self.seq.get(dev.id, -1) + 1
        bad = None
        if self.split_range:
            values, bad = split_by_range(values)
        reading = Reading(device=dev.id, seq=seq, ts=at(t + skew_s), values=values)
        self.now = t
        self.log += [(t, x) for x in self.engine.feed(dev, reading, at(t), bad)]

    def tick(self, t: float) -> None:
        self.now = t
        self.log += [(t, x) for x in self.engine.tick(at(t))]

    def run(
        self,
        dev: DeviceInfo,
        values: Callable[[float], dict[str, float]],
        start: float,
        end: float,
        every: float,
        tick_every: float | None = None,
    ) -> None:
        """Readings every ``every`` s from ``start`` to ``end`` (inclusive), ticks between."""
        step = tick_every or every
        t = start
        next_reading = start
        while t <= end + 1e-9:
            if t >= next_reading - 1e-9:
                self.feed(t, dev, **values(t))
                next_reading += every
            else:
                self.tick(t)
            t = round(t + step, 6)

    def changes(self) -> list[tuple[float, str, str, str]]:
        return [(t, x.rule, x.phase.value, x.severity.value) for t, x in self.log]

    def first(self, phase: Phase = Phase.RAISED, rule: str | None = None) -> float | None:
        for t, x in self.log:
            if x.phase is phase and (rule is None or x.rule == rule):
                return t
        return None

    def raised(self, rule: str | None = None) -> list[Transition]:
        return [x for _, x in self.log if x.phase is Phase.RAISED and rule in (None, x.rule)]
