"""Device faults: each does what it says, at the configured rate, and is in the ground truth."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

import wire
from firmware_sim.engine import Engine
from firmware_sim.faults import Transmission
from tests.unit.sim.helpers import small


def run(faults: str) -> tuple[list[Transmission], dict[str, int], list[wire.replay.DeviceFault]]:
    c = small("faults:\n" + faults)
    sent = list(Engine(c).transmissions())
    return sent, c.injector.counters, c.ground_truth().faults


def of(sent: list[Transmission], device: str) -> list[Transmission]:
    return [t for t in sent if t.device == device]


def test_malformed_payloads_at_the_configured_rate() -> None:
    sent, counters, truth = run("  - {fault: malformed, kind: pump, rate: 0.1}\n")
    pump = of(sent, "pump-b1")
    junk = [t for t in pump if t.reading is None]
    assert len(pump) > 300
    # 10 % of ~360 readings: binomial sd ~ 5.7; allow 3 sd.
    assert abs(len(junk) / len(pump) - 0.1) < 0.05
    assert counters["malformed"] == len(junk)
    codec = wire.Codec()
    for t in junk:
        assert t.payload is not None
        with pytest.raises(wire.WireError):
            codec.decode_readings(t.payload, t.at)
    assert [(f.device, f.fault) for f in truth] == [("pump-b1", "malformed")]


def test_duplicates_at_the_configured_rate() -> None:
    sent, _, _ = run("  - {fault: duplicate, device: pump-b1, rate: 0.2}\n")
    pump = of(sent, "pump-b1")
    dupes = [t for t in pump if t.duplicate]
    originals = len(pump) - len(dupes)
    assert abs(len(dupes) / originals - 0.2) < 0.07
    seqs = [t.reading.seq for t in pump if t.reading]
    assert len(seqs) - len(set(seqs)) == len(dupes)


def test_reorder_makes_readings_arrive_out_of_order() -> None:
    sent, _, _ = run("  - {fault: reorder, device: pump-b1, rate: 0.1}\n")
    seqs = [t.reading.seq for t in of(sent, "pump-b1") if t.reading]
    inversions = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    assert 15 < inversions < 60
    assert sorted(seqs) == list(range(len(seqs)))


def test_dropout_silences_the_device_for_its_window() -> None:
    sent, _, truth = run("  - {fault: dropout, device: pump-b1, at: 10m, duration: 10m}\n")
    start, end = truth[0].start, truth[0].end
    stamps = [t.at for t in of(sent, "pump-b1")]
    assert not [s for s in stamps if start <= s < end]
    assert any(s >= end for s in stamps) and any(s < start for s in stamps)
    seqs = [t.reading.seq for t in of(sent, "pump-b1") if t.reading]
    assert seqs == sorted(seqs)  # no gap in seq: the device was not measuring


def test_stuck_value_repeats() -> None:
    sent, _, _ = run("  - {fault: stuck, device: pump-b1, at: 10m, duration: 10m}\n")
    c = small()
    window = [
        t.reading.values
        for t in of(sent, "pump-b1")
        if t.reading and c.start + timedelta(minutes=10) <= t.at < c.start + timedelta(minutes=20)
    ]
    assert len(window) > 50
    assert all(v == window[0] for v in window)


def test_noise_burst_and_drift_change_values() -> None:
    clean, _, _ = run("  - {fault: delay, device: flood-b1, magnitude: 1}\n")
    noisy, _, _ = run("  - {fault: noise_burst, device: pump-b1, at: 10m, duration: 5m}\n")
    drift, _, _ = run("  - {fault: drift, device: pump-b1}\n")

    def pressures(sent: list[Transmission], a: int, b: int) -> list[float]:
        return [t.reading.values["pressure_bar"] for t in of(sent, "pump-b1") if t.reading][a:b]

    spread = max(pressures(noisy, 65, 85)) - min(pressures(noisy, 65, 85))
    assert spread > 5 * (max(pressures(clean, 65, 85)) - min(pressures(clean, 65, 85)))
    # 5 % of the 41 bar range per hour: about +2 bar by the end.
    assert pressures(drift, -10, None)[0] - pressures(clean, -10, None)[0] > 1.5  # type: ignore[arg-type]


def test_delay_and_clock_skew() -> None:
    sent, _, _ = run(
        "  - {fault: delay, device: pump-b1, magnitude: 45}\n"
        "  - {fault: clock_skew, device: flood-b1, magnitude: 600}\n"
    )
    for t in of(sent, "pump-b1"):
        assert t.reading is not None
        assert t.at - t.reading.ts == timedelta(seconds=45)
    for t in of(sent, "flood-b1"):
        assert t.reading is not None
        assert t.reading.ts - t.at == timedelta(seconds=600)
    ats = [t.at for t in sent]
    assert ats == sorted(ats)  # everything is yielded in arrival order


def test_dead_battery_drains_then_silences() -> None:
    sent2, _, truth2 = run("  - {fault: dead_battery, device: pump-b1, at: 10m, duration: 10m}\n")
    batteries = [t.reading.values["battery_pct"] for t in of(sent2, "pump-b1") if t.reading]
    assert batteries[0] == 100.0 and min(batteries) < 10
    last = max(t.at for t in of(sent2, "pump-b1"))
    assert last <= truth2[0].start + timedelta(minutes=10)
    assert truth2[0].end == small().end  # dead to the end


def test_faults_on_a_family_pick_a_seeded_share() -> None:
    _, _, truth = run("  - {fault: drift, kind: pir, share: 0.5}\n")
    _, _, again = run("  - {fault: drift, kind: pir, share: 0.5}\n")
    assert len(truth) == 6  # half of 12 PIRs
    assert truth == again
