"""Score alerts against ground truth: detected, missed, false and delay per incident kind.

An incident's expected alert is detected by a raised or escalated alert of the same kind, at
the expected place (every device / unit / building the expectation names), at least as severe,
between the incident's start and the expectation's ``latest``. A raised alert that no incident
or injected device fault explains, or that an incident forbids, is false.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from rules.language import SEVERITY_RANK
from rules.transition import Transition
from wire.models import Phase
from wire.replay import ExpectedAlert, GroundTruth

# Alerts about devices themselves: explained by an injected fault on that device.
HEALTH_PREFIX = "device_"
# An alert raised this long after an incident ended still belongs to it (e.g. a dose alarm).
AFTERGLOW = timedelta(minutes=30)


@dataclass(slots=True)
class KindScore:
    kind: str
    incidents: int = 0
    expected: int = 0
    detected: int = 0
    missed: int = 0
    false: int = 0
    life_safety: bool = False
    delays_s: list[float] = field(default_factory=list)

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays_s) if self.delays_s else None

    @property
    def max_delay_s(self) -> float | None:
        return max(self.delays_s) if self.delays_s else None


@dataclass(slots=True)
class Score:
    kinds: dict[str, KindScore]
    missed: list[tuple[str, ExpectedAlert]]  # (incident id, expectation)
    false: list[Transition]

    @property
    def life_safety_ok(self) -> bool:
        """Every life-safety incident detected, no false life-safety alarm."""
        missed = any(self.kinds[k].missed for k in self.kinds if self.kinds[k].life_safety)
        return not missed and not any(t.life_safety for t in self.false)


def _at_place(expect: ExpectedAlert, alert: Transition) -> bool:
    return (
        alert.kind == expect.kind
        and (expect.device is None or expect.device in (alert.device, alert.key))
        and (expect.unit is None or expect.unit == alert.unit)
        and (expect.building is None or expect.building == alert.building)
    )


def score(transitions: Sequence[Transition], truth: GroundTruth) -> Score:
    raised = [t for t in transitions if t.phase in (Phase.RAISED, Phase.UPDATED)]
    kinds: dict[str, KindScore] = {}
    explained: set[int] = set()
    forbidden: set[int] = set()
    missed: list[tuple[str, ExpectedAlert]] = []
    for incident in truth.incidents:
        row = kinds.setdefault(incident.kind, KindScore(incident.kind))
        row.incidents += 1
        row.life_safety |= incident.life_safety
        for expect in incident.expect:
            row.expected += 1
            hits = [
                (i, t)
                for i, t in enumerate(raised)
                if _at_place(expect, t) and incident.start <= t.at <= incident.end + AFTERGLOW
            ]
            explained.update(i for i, _ in hits)
            good = [
                t
                for _, t in hits
                if t.at <= expect.latest
                and SEVERITY_RANK[t.severity.value] >= SEVERITY_RANK.get(expect.severity.value, 0)
            ]
            if good:
                row.detected += 1
                row.delays_s.append((good[0].at - incident.start).total_seconds())
            else:
                row.missed += 1
                missed.append((incident.id, expect))
        for ban in incident.forbid:
            forbidden.update(
                i
                for i, t in enumerate(raised)
                if _at_place(ban, t) and incident.start <= t.at <= incident.end + AFTERGLOW
            )
    for i, alert in enumerate(raised):
        if i in explained or not alert.kind.startswith(HEALTH_PREFIX):
            continue
        if any(
            f.device == alert.device and f.start <= alert.at <= f.end + AFTERGLOW
            for f in truth.faults
        ):
            explained.add(i)
    false = [
        t
        for i, t in enumerate(raised)
        if t.phase is Phase.RAISED and (i in forbidden or i not in explained)
    ]
    for alert in false:
        row = kinds.setdefault(alert.kind, KindScore(alert.kind))
        row.false += 1
        row.life_safety |= alert.life_safety
    return Score(kinds=kinds, missed=missed, false=false)
