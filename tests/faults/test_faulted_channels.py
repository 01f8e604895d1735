"""Hypothesis-generated streams of one device's readings, values in and out of their
physical range among ever new names, through the gateway's ingest into the rules: every
value a reading carried is either in the reading the rules get, passed on beside it as a
fault, or named in the dead letter; the device's names stay bounded; and the rules' faulted
channels follow each channel's latest value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edge.config import DeviceConfig
from edge.ingest import METRICS_PER_DEVICE, Accepted, Ingest, Rejection
from rules import Engine, load_preset
from wire import Codec, Reading, topics
from wire.metrics import metric
from wire.replay import DeviceInfo

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOPIC = topics.reading("s1", "gw-1", "heat-1")
INFO = DeviceInfo(
    id="heat-1", kind="heat", site="s1", gateway="gw-1", building="b1", unit="101", interval_s=60
)
# Registered names (temp_c, battery), ever new per-door names (any is registered) and
# unregistered ones (no range to leave).
NAMES = st.one_of(
    st.sampled_from(["temp_c", "battery_pct", "smoke_obs"]),
    st.integers(0, 90).map(lambda n: f"door_{n}_open"),
    st.integers(0, 90).map(lambda n: f"fw_{n}"),
)
VALUES = st.sampled_from([-500.0, -1.0, 0.0, 0.5, 1.0, 21.0, 99.0, 151.0, 9999.0])
READING = st.dictionaries(NAMES, VALUES, min_size=1, max_size=6)
# (seq step: 0 repeats the last seq, a batch of readings)
MESSAGES = st.lists(
    st.tuples(st.integers(0, 2), st.lists(READING, min_size=1, max_size=3)),
    min_size=1,
    max_size=40,
)


def _outside(name: str, value: float) -> bool:
    found = metric(name)
    return found is not None and not found.low <= value <= found.high


# Past the name limit for sure: 90 door names, each sent once outside its range, then good.
MANY = [
    (1, [{f"door_{n}_open": 5.0, "temp_c": 21.0} for n in range(k, k + 3)]) for k in range(0, 90, 3)
] + [(1, [{f"door_{n}_open": 0.0} for n in range(k, k + 3)]) for k in range(0, 90, 3)]


@settings(max_examples=150, deadline=None)
@given(MESSAGES)
@example(MANY)
def test_every_value_is_judged_passed_on_as_a_fault_or_reported(
    messages: list[tuple[int, list[dict[str, float]]]],
) -> None:
    ingest = Ingest("s1", "gw-1", [DeviceConfig(id="heat-1", kind="heat")], Codec())
    engine = Engine(load_preset("device-health"))
    engine.add_devices([INFO], NOW)
    faulted: dict[str, float] = {}  # what the rules must hold: each channel's latest fault
    seq, at = 0, NOW
    for step, batch in messages:
        sent = {}
        for values in batch:
            seq += step
            at += timedelta(seconds=1)
            sent[seq] = values
        payload = (
            b"["
            + b",".join(
                msgspec.json.encode(Reading(device="heat-1", seq=s, ts=at, values=v))
                for s, v in sent.items()
            )
            + b"]"
        )
        result = ingest.accept(TOPIC, payload, at)
        assert isinstance(result, Accepted | Rejection)
        if isinstance(result, Rejection):
            continue
        outside = result.outside
        assert outside is None or len(outside) == len(result.readings)
        for index, reading in enumerate(result.readings):
            bad = outside[index] if outside is not None else None
            original = sent[reading.seq]
            assert all(not _outside(n, v) for n, v in reading.values.items())
            assert all(_outside(n, v) for n, v in (bad or {}).items())
            kept = {**reading.values, **(bad or {})}
            assert kept.items() <= original.items()
            if kept != original:  # the rest went to the letter, as too many names
                assert result.dropped is not None
                assert "different metrics, the limit" in result.dropped.detail
            engine.feed(INFO, reading, at, bad)
            for name in reading.values:
                faulted.pop(name, None)
            faulted.update(bad or {})
            track = engine.state.devices["heat-1"]
            assert track.faulted == faulted
            active = ("device-out-of-range", "heat-1") in {
                (rule, key) for rule, key, _ in engine.active()
            }
            assert active or not faulted
        health = ingest.devices["heat-1"]
        assert len(health.last_values) + len(health.faulty) <= METRICS_PER_DEVICE
        track = engine.state.devices["heat-1"]
        assert len(track.metrics.keys() | track.faulted.keys()) <= METRICS_PER_DEVICE
        assert not health.faulty & health.last_values.keys()
