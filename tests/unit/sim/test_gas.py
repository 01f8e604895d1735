"""The gas sensor model, driven by simulated time (hours of readings in milliseconds)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

import wire
from firmware_sim.gas import GasSensor

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def lel(reading: wire.Reading) -> float:
    return reading.values["gas_lel"]


def series(sensor: GasSensor, seconds: int, start: datetime = T0) -> list[wire.Reading]:
    return [sensor.reading(start + timedelta(seconds=s)) for s in range(seconds)]


def command(device: str, action: wire.models.CommandAction, at: datetime) -> wire.Command:
    return wire.Command(id=wire.uuid7(), device=device, action=action, ts=at)


def test_same_seed_gives_same_readings() -> None:
    assert series(GasSensor("gas-1", seed=3), 100) == series(GasSensor("gas-1", seed=3), 100)


def test_different_seed_gives_different_readings() -> None:
    a = [lel(r) for r in series(GasSensor("gas-1", seed=3), 100)]
    b = [lel(r) for r in series(GasSensor("gas-1", seed=4), 100)]
    assert a != b


def test_baseline_stays_low_for_an_hour() -> None:
    sensor = GasSensor("gas-1", seed=11)
    values = [lel(r) for r in series(sensor, 3600)]
    assert all(0.0 <= v < 2.0 for v in values)
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.05)
    assert not sensor.truth(T0 + timedelta(hours=1))


def test_readings_never_go_below_zero_or_above_100() -> None:
    sensor = GasSensor("gas-1", seed=1, baseline_lel=0.0, noise_lel=2.0)
    sensor.leak(T0, rise_per_s=50.0, peak_lel=100.0)
    values = [lel(r) for r in series(sensor, 600, start=T0 - timedelta(seconds=300))]
    assert min(values) == 0.0
    assert max(values) == 100.0


def test_leak_crosses_25_lel_when_expected() -> None:
    sensor = GasSensor("gas-1", seed=5)
    start = T0 + timedelta(minutes=10)
    sensor.leak(start, rise_per_s=2.0, peak_lel=40.0)
    readings = series(sensor, 20 * 60)
    crossed = next(r.ts for r in readings if lel(r) >= 25.0)
    expected = start + timedelta(seconds=(25.0 - sensor.baseline_lel) / 2.0)
    assert abs((crossed - expected).total_seconds()) <= 2.0
    # It holds at the peak (the source never stops), and the truth says so.
    assert lel(readings[-1]) == pytest.approx(40.0, abs=1.0)
    assert not sensor.truth(start)
    assert sensor.truth(start + timedelta(minutes=5))


def test_leak_with_a_duration_decays_back() -> None:
    sensor = GasSensor("gas-1", seed=5)
    sensor.leak(T0, rise_per_s=2.0, peak_lel=40.0, duration_s=60.0)
    assert sensor.concentration(T0 + timedelta(seconds=59)) == pytest.approx(40.0)
    assert sensor.concentration(T0 + timedelta(minutes=10)) < 1.0
    assert not sensor.truth(T0 + timedelta(minutes=10))


def test_concentration_does_not_depend_on_sampling_rate() -> None:
    often, seldom = GasSensor("gas-1", seed=1), GasSensor("gas-1", seed=1)
    for sensor in (often, seldom):
        sensor.leak(T0, rise_per_s=2.0, peak_lel=40.0, duration_s=30.0)
    for s in range(120):
        often.concentration(T0 + timedelta(seconds=s))
    end = T0 + timedelta(seconds=120)
    assert often.concentration(end) == pytest.approx(seldom.concentration(end))


def test_closing_the_valve_brings_the_gas_down() -> None:
    sensor = GasSensor("gas-1", seed=9)
    sensor.leak(T0, rise_per_s=2.0, peak_lel=40.0)
    closed_at = T0 + timedelta(seconds=60)
    assert lel(sensor.reading(closed_at)) > 35.0
    sensor.apply(command("gas-1", "valve_close", closed_at))
    assert sensor.valve_closed
    later = series(sensor, 300, start=closed_at + timedelta(seconds=1))
    first_safe = next(r for r in later if lel(r) < 5.0)
    assert (first_safe.ts - closed_at) < timedelta(minutes=2)
    assert all(lel(r) < 5.0 for r in later[-60:])
    assert not sensor.truth(later[-1].ts)
    # Reopening the valve while the leak goes on lets the gas rise again.
    sensor.apply(command("gas-1", "valve_open", later[-1].ts))
    assert sensor.concentration(later[-1].ts + timedelta(seconds=60)) > 35.0


def test_siren_and_valve_commands_show_in_status() -> None:
    sensor = GasSensor("gas-1", seed=1)
    assert sensor.status(T0).actuators == {"siren": "off", "valve": "open"}
    sensor.apply(command("gas-1", "siren_on", T0))
    sensor.apply(command("gas-1", "valve_close", T0))
    status = sensor.status(T0, "offline")
    assert status.actuators == {"siren": "on", "valve": "closed"}
    assert (status.kind, status.state, status.device) == ("gas", "offline", "gas-1")
    sensor.apply(command("gas-1", "siren_off", T0))
    assert not sensor.siren
    assert [c.action for c in sensor.commands] == ["siren_on", "valve_close", "siren_off"]


def test_seq_strictly_increases() -> None:
    seqs = [r.seq for r in series(GasSensor("gas-1", seed=2), 500)]
    assert seqs[0] == 0
    assert all(b == a + 1 for a, b in itertools.pairwise(seqs))


def test_readings_and_statuses_survive_the_codec() -> None:
    codec = wire.Codec()
    sensor = GasSensor("gas-b1-101", seed=7)
    sensor.leak(T0, rise_per_s=2.0, peak_lel=40.0)
    for reading in series(sensor, 60):
        decoded = codec.decode_readings(codec.encode(reading), now=reading.ts)
        assert decoded == [reading]
    status = sensor.status(T0)
    assert codec.decode(codec.encode(status), wire.DeviceStatus, T0) == status


def test_bad_ids_and_leaks_are_refused() -> None:
    with pytest.raises(wire.WireError):
        GasSensor("gas/1", seed=1)
    with pytest.raises(ValueError, match="rise_per_s"):
        GasSensor("gas-1", seed=1).leak(T0, rise_per_s=0.0, peak_lel=40.0)
