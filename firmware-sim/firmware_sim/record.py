"""Recording: a scenario as a replay file (JSON Lines, ``wire.replay``) plus its ground truth.

The replay holds the readings as the gateway would receive them, in arrival order: each
transmission is decoded with the same ``wire.Codec`` the edge uses (at its arrival time), so a
malformed payload is counted as rejected and left out, exactly as the gateway would dead-letter
it, and a duplicate or a late reading is written as it arrived.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

import wire
from firmware_sim.community import Community
from firmware_sim.engine import Engine
from wire.replay import GroundTruth, ReplayHeader, ReplayRecord, encode_line

Progress = Callable[[float], None]


def truth_path(replay: Path) -> Path:
    """Where the ground truth of a replay goes: ``FILE.truth.json`` beside ``FILE``."""
    return replay.with_name(replay.name + ".truth.json")


@dataclass(slots=True)
class RecordSummary:
    replay: Path
    truth: Path
    devices: int
    readings: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    faults: dict[str, int] = field(default_factory=dict)
    incidents: int = 0
    simulated_s: float = 0.0


def record(
    community: Community,
    out: Path,
    *,
    progress: Progress | None = None,
    progress_every: int = 5000,
) -> RecordSummary:
    """Run the whole scenario on the simulated clock; write ``out`` and its truth file."""
    engine = Engine(community)
    codec = wire.Codec()
    infos = community.device_infos()
    kinds = {info.id: info.kind for info in infos}
    where = {info.id: (info.site, info.gateway) for info in infos}
    header = ReplayHeader(
        scenario=community.scenario.name,
        seed=community.seed,
        start=community.start,
        end=community.end,
        devices=infos,
    )
    summary = RecordSummary(out, truth_path(out), devices=len(infos))
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    with out.open("wb") as replay:
        replay.write(encode_line(header))
        count = 0
        for tx in engine.transmissions():
            count += 1
            if progress is not None and count % progress_every == 0:
                progress(engine.progress)
            if tx.reading is None:
                try:
                    codec.decode_readings(tx.payload or b"", tx.at)
                except wire.WireError as exc:
                    summary.rejected[str(exc.reason)] += 1
                continue
            # Skewed timestamps are kept: ``at`` beside ``reading.ts`` is how rules see skew.
            reading = tx.reading
            site, gateway = where[tx.device]
            line = ReplayRecord(at=tx.at, site=site, gateway=gateway, reading=reading)
            replay.write(encoder.encode(line) + b"\n")
            summary.readings += 1
            summary.by_kind[kinds[tx.device]] += 1
    truth = community.ground_truth()
    summary.truth.write_bytes(msgspec.json.format(msgspec.json.encode(truth)) + b"\n")
    summary.faults = dict(community.injector.counters)
    summary.incidents = len(truth.incidents)
    summary.simulated_s = engine.end_s
    if progress is not None:
        progress(1.0)
    return summary


def read_truth(path: Path) -> GroundTruth:
    return msgspec.json.decode(path.read_bytes(), type=GroundTruth)
