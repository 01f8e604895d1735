"""Labelled series and how a detector is judged on one: the rule (score condition, hold and
clear) runs in the real engine over the readings; its alerts are the detector's answer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from rules.engine import Engine
from rules.language import Condition, Level, Rule
from wire.metrics import split_by_range
from wire.models import Phase, Reading
from wire.replay import DeviceInfo


@dataclass(slots=True)
class Series:
    """One recording of one device: readings with a 0/1 label per row."""

    name: str
    source: str  # "sim" or "skab"
    kind: str  # the device kind (the rule's devices.kinds)
    times: list[datetime]
    rows: list[dict[str, float]]
    labels: list[int]  # 1 = anomalous row
    events: list[int]  # NAB label rows: where each anomaly begins
    scored_from: int = 0  # rows before this are the training part (not in F1 / FAR / MAR)
    interval_s: float = 1.0
    group: str = ""  # SKAB: "tuning", "held-out" or "anomaly-free" (anmin/evaluation/skab.py)


@dataclass(slots=True)
class Outcome:
    """A detector's answer on a series: its score and whether the alert was open, per row."""

    series: Series
    detector: str
    scores: list[float] = field(default_factory=list)
    alert: list[bool] = field(default_factory=list)
    raised: list[int] = field(default_factory=list)  # rows where the alert was raised


def with_detector(rule: Rule, detector: str) -> Rule:
    """The same rule with every ``score`` condition reading ``detector``."""

    def cond(c: Condition) -> Condition:
        if c.all is not None:
            return msgspec.structs.replace(c, all=[cond(x) for x in c.all])
        if c.any is not None:
            return msgspec.structs.replace(c, any=[cond(x) for x in c.any])
        return msgspec.structs.replace(c, score=detector) if c.score is not None else c

    def level(lv: Level) -> Level:
        return msgspec.structs.replace(
            lv,
            all=None if lv.all is None else [cond(x) for x in lv.all],
            any=None if lv.any is None else [cond(x) for x in lv.any],
        )

    create = msgspec.structs.replace(
        rule.create,
        **{name: level(lv) for name, lv in rule.create.items()},
    )
    clear = None if rule.clear is None else level(rule.clear)
    return msgspec.structs.replace(rule, create=create, clear=clear)


def scored_rule(rules: Sequence[Rule]) -> Rule:
    for rule in rules:
        for _, lv in rule.levels():
            cond = lv.condition
            if cond is not None and any(leaf.score for leaf in cond.leaves()):
                return rule
    raise ValueError("no rule with a score condition")


def device_id(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:60] or "device"


def run(series: Series, rule: Rule, detector: str) -> Outcome:
    rule = with_detector(rule, detector)
    engine = Engine([rule])
    info = DeviceInfo(
        id=device_id(series.name),
        kind=series.kind,
        site="eval",
        gateway="eval",
        building="eval",
        interval_s=series.interval_s,
    )
    engine.add_devices([info], series.times[0])
    out = Outcome(series, detector)
    for i, (at, values) in enumerate(zip(series.times, series.rows, strict=True)):
        good, bad = split_by_range(values)  # as the edge's ingest does (a faulted channel)
        reading = Reading(device=info.id, seq=i, ts=at, values=good)
        changes = engine.feed(info, reading, at, bad)
        if any(t.phase is Phase.RAISED for t in changes):
            out.raised.append(i)
        out.scores.append(engine.state.devices[info.id].scores.get(detector, 0.0))
        track = engine.state.alerts.get(rule.id, {}).get(info.id)
        out.alert.append(track is not None and track.severity is not None)
    return out


@dataclass(slots=True)
class Binary:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, outcome: Outcome) -> None:
        start = outcome.series.scored_from
        for truth, said in zip(outcome.series.labels[start:], outcome.alert[start:], strict=True):
            if said and truth:
                self.tp += 1
            elif said:
                self.fp += 1
            elif truth:
                self.fn += 1
            else:
                self.tn += 1

    @property
    def f1(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 0.0

    @property
    def far(self) -> float:
        """False alarm rate: the share of normal rows flagged."""
        normal = self.fp + self.tn
        return self.fp / normal if normal else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate: the share of anomalous rows not flagged."""
        anomalous = self.fn + self.tp
        return self.fn / anomalous if anomalous else 0.0
