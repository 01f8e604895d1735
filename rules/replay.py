"""Run rules over a recorded replay (wire.replay): readings in arrival order, ticks between.

Pure: the caller reads the file and hands over the decoded lines; ``anmin rules test`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from rules.engine import Engine
from rules.language import Rule
from rules.ruleset import RuleSet
from rules.transition import Transition
from wire.metrics import split_by_range
from wire.replay import ReplayHeader, ReplayRecord


@dataclass(slots=True)
class ReplayResult:
    transitions: list[Transition] = field(default_factory=list)
    readings: int = 0
    unknown_devices: dict[str, int] = field(default_factory=dict)


def run_replay(
    ruleset: RuleSet | Sequence[Rule],
    header: ReplayHeader,
    records: Iterable[ReplayRecord],
    *,
    tick_s: float = 10.0,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Feed every record at its arrival time; tick every ``tick_s`` of replay time in between
    and on to the header's end. ``progress`` is called with the count every 1000 records."""
    engine = Engine(ruleset)
    engine.add_devices(header.devices, header.start)
    devices = {d.id: d for d in header.devices}
    step = timedelta(seconds=tick_s)
    result = ReplayResult()
    next_tick = header.start + step

    def tick_until(limit: datetime) -> None:
        nonlocal next_tick
        while next_tick < limit:
            result.transitions.extend(engine.tick(next_tick))
            next_tick += step

    for record in records:
        tick_until(record.at)
        info = devices.get(record.reading.device)
        if info is None:
            name = record.reading.device
            result.unknown_devices[name] = result.unknown_devices.get(name, 0) + 1
            continue
        reading = record.reading
        # As the edge's ingest does: a value outside its physical range faults its channel.
        values, bad = split_by_range(reading.values)
        if bad is not None:
            reading = msgspec.structs.replace(reading, values=values)
        result.transitions.extend(engine.feed(info, reading, record.at, bad))
        result.readings += 1
        if progress is not None and result.readings % 1000 == 0:
            progress(result.readings)
    tick_until(header.end + step)
    return result
