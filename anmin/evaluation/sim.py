"""The simulator's labelled scenarios, recorded in-process: the replay and its ground truth,
every rule scored against the incidents, and one labelled series per device a detector reads."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anmin.evaluation.series import Series
from rules.language import RoutineTimes, Rule
from rules.replay import run_replay
from rules.ruleset import RuleSet
from rules.scoring import Score, score
from wire.replay import GroundTruth, ReplayHeader, ReplayRecord, decode_lines

if TYPE_CHECKING:
    from firmware_sim.community import Community


@dataclass(slots=True)
class Recording:
    header: ReplayHeader
    records: list[ReplayRecord]
    truth: GroundTruth
    utc_offset: str = "+08:00"  # the scenario's local time, for "hours" and routines
    # Each monitored resident's usual wake time, as an installer configures it from what the
    # family says: the scenario's wake_h (weekends later, as the simulated households are).
    routines: list[RoutineTimes] = field(default_factory=list)


def record(scenario: Path, *, seed: int | None, duration_s: float | None) -> Recording:
    from firmware_sim import community
    from firmware_sim.record import read_truth
    from firmware_sim.record import record as record_scenario
    from firmware_sim.scenario import load_scenario

    loaded = load_scenario(scenario)
    built = community.build(loaded, seed=seed, duration_s=duration_s)
    with tempfile.TemporaryDirectory(prefix="anmin-eval-") as tmp:
        out = Path(tmp) / "replay.jsonl"
        summary = record_scenario(built, out)
        lines = decode_lines(out.read_bytes())
        truth = read_truth(summary.truth)
    header = lines[0]
    assert isinstance(header, ReplayHeader)
    records = [line for line in lines[1:] if isinstance(line, ReplayRecord)]
    return Recording(header, records, truth, offset_text(loaded.utc_offset_h), routines(built))


def routines(built: Community) -> list[RoutineTimes]:
    """The usual wake times of the community's elderly (monitored) residents."""
    from firmware_sim.household import WEEKEND_SHIFT_H

    return [
        RoutineTimes(
            resident=resident.id,
            wake=clock_text(resident.routine.wake_h),
            weekend_wake=clock_text(resident.routine.wake_h + WEEKEND_SHIFT_H),
        )
        for resident in sorted(built.residents.values(), key=lambda r: r.id)
        if resident.routine.elderly
    ]


def clock_text(hours: float) -> str:
    minutes = round(hours * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def offset_text(hours: float) -> str:
    minutes = round(abs(hours) * 60)
    return f"{'-' if hours < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def score_rules(recording: Recording, rules: Sequence[Rule], *, routines: bool = True) -> Score:
    # A rule set, not a bare list: the engine takes local time ("hours", routines) from it,
    # and a list would run them on UTC (night at 05:00 +08:00 would be 21:00). ``routines``:
    # configure the residents' usual wake times (else the rules' defaults).
    ruleset = RuleSet(
        rules=list(rules),
        utc_offset=recording.utc_offset,
        routines=recording.routines if routines else [],
    )
    result = run_replay(ruleset, recording.header, recording.records)
    return score(result.transitions, recording.truth)


def series(recording: Recording, kinds: Sequence[str]) -> list[Series]:
    """A series per device of these kinds; rows inside an incident that expects an alert on
    the device are labelled 1, and the incident's first reading is its NAB label row."""
    out = []
    for info in recording.header.devices:
        if info.kind not in kinds:
            continue
        mine = [r for r in recording.records if r.reading.device == info.id]
        if not mine:
            continue
        incidents = [
            i for i in recording.truth.incidents if any(e.device == info.id for e in i.expect)
        ]
        labels = [int(any(i.start <= r.at <= i.end for i in incidents)) for r in mine]
        events = []
        for incident in incidents:
            first = next((k for k, r in enumerate(mine) if r.at >= incident.start), None)
            if first is not None:
                events.append(first)
        out.append(
            Series(
                name=f"sim/{recording.header.scenario}/{info.id}",
                source="sim",
                kind=info.kind,
                times=[r.at for r in mine],
                rows=[dict(r.reading.values) for r in mine],
                labels=labels,
                events=events,
                scored_from=0,
                interval_s=info.interval_s,
            )
        )
    return out
