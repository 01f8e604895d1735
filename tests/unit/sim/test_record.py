"""Recording: the replay and ground truth are written, parse back with wire.replay, and the
same seed gives the same files."""

from __future__ import annotations

from pathlib import Path

import wire
from firmware_sim import community
from firmware_sim.record import read_truth, record, truth_path
from firmware_sim.scenario import load_scenario, sample_path
from wire.replay import ReplayHeader, ReplayRecord, decode_lines


def test_sample_community_records_and_parses_back(tmp_path: Path) -> None:
    c = community.build(load_scenario(sample_path()), duration_s=600)
    shares: list[float] = []
    summary = record(c, tmp_path / "sample.jsonl", progress=shares.append, progress_every=500)
    assert shares[-1] == 1.0 and shares == sorted(shares)
    lines = decode_lines((tmp_path / "sample.jsonl").read_bytes())
    header, records = lines[0], lines[1:]
    assert isinstance(header, ReplayHeader)
    assert header.scenario == "sample-community"
    assert len(header.devices) == summary.devices
    assert all(isinstance(r, ReplayRecord) for r in records)
    assert len(records) == summary.readings > 2000
    ats = [r.at for r in records if isinstance(r, ReplayRecord)]
    assert ats == sorted(ats)
    assert all(header.start <= at <= header.end for at in ats)
    truth = read_truth(truth_path(tmp_path / "sample.jsonl"))
    assert truth == c.ground_truth()
    assert truth.incidents and truth.faults
    assert all(i.start <= truth.end for i in truth.incidents)
    # Malformed payloads are left out and counted, as the gateway would reject them.
    assert sum(summary.rejected.values()) == c.injector.counters.get("malformed", 0)


def test_same_seed_same_replay_other_seed_other_replay(tmp_path: Path) -> None:
    def once(seed: int, name: str) -> bytes:
        c = community.build(load_scenario(sample_path()), seed=seed, duration_s=300)
        record(c, tmp_path / name)
        return (tmp_path / name).read_bytes()

    a, b, other = once(5, "a.jsonl"), once(5, "b.jsonl"), once(6, "c.jsonl")
    assert a == b
    assert a != other
    assert (tmp_path / "a.jsonl.truth.json").read_bytes() == (
        tmp_path / "b.jsonl.truth.json"
    ).read_bytes()


def test_replay_readings_decode_with_the_gateway_codec(tmp_path: Path) -> None:
    c = community.build(load_scenario(sample_path()), duration_s=120)
    record(c, tmp_path / "r.jsonl")
    codec = wire.Codec()
    for line in decode_lines((tmp_path / "r.jsonl").read_bytes())[1:]:
        assert isinstance(line, ReplayRecord)
        reading = line.reading
        assert codec.decode_readings(codec.encode(reading), line.at + wire.Limits().max_future)
