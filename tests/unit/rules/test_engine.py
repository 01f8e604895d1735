"""The engine's mechanics: holds, repeats, latches, scopes, reload, snapshot and restore,
and the detector hook."""

from __future__ import annotations

import bisect
import math
import random
import textwrap
from collections.abc import Mapping

import msgspec
import pytest

from rules import Engine, EngineError, RuleSet, load_preset, load_yaml
from rules.durations import seconds
from rules.language import Condition
from rules.signals import BUCKET_FRACTION, DeviceTrack, _aggregate, rate_of
from tests.unit.rules.support import Sim, at, device
from wire import Phase, Reading

GAS = device("gas-1", "gas")


def ruleset(text: str) -> RuleSet:
    return load_yaml(textwrap.dedent(text), RuleSet, "test.yaml")


REPEATED = ruleset(
    """\
    rules:
      - id: door-slams
        kind: tamper
        devices: {kinds: [locker]}
        create:
          Minor:
            all:
              - {metric: tamper, op: "==", value: 1}
            repeat: 3
            within: 10min
    """
)
LOCKER = device("locker-1", "locker")


def test_repeat_n_times_within_a_window() -> None:
    sim = Sim(REPEATED)
    for t in (0, 400, 800, 1300):  # never 3 within 10 min
        sim.feed(t, LOCKER, tamper=1)
        sim.feed(t + 30, LOCKER, tamper=0)
    assert sim.log == []
    for t in (2000, 2100, 2200):
        sim.feed(t, LOCKER, tamper=1)
    assert sim.changes() == [(2200, "door-slams", "raised", "Minor")]
    sim.feed(2300, LOCKER, tamper=0)  # no clear condition: clears once no create holds
    assert sim.changes()[-1][2] == "cleared"


def test_a_repeat_keeps_only_the_hits_that_decide() -> None:
    """The newest ``repeat`` hits decide; a long window kept every hit in the saved state
    (50,000 after 50,000 readings with ``within: 3650d``)."""
    sim = Sim(REPEATED)
    for t in range(0, 200, 2):
        sim.feed(t, LOCKER, tamper=1)
    assert sim.changes() == [(4, "door-slams", "raised", "Minor")]
    track = sim.engine.state.alerts["door-slams"][LOCKER.id]
    assert track.hits == {"Minor": [at(t).timestamp() for t in (194, 196, 198)]}


GROUP_LATCH = ruleset(
    """\
    rules:
      - id: hot-with-smoke-lately
        kind: fire
        scope: unit
        devices: {kinds: [heat, smoke]}
        create:
          Severe:
            all:
              - {metric: smoke_obs, op: ">=", value: 3, unit: "%/m"}
              - all:  # heat and a fast rise together, at any time in the last 5 min
                  - {metric: temp_c, op: ">=", value: 50, unit: "°C"}
                  - {rate: temp_c, over: 60s, op: ">=", value: 5, unit: "°C/min"}
                within: 5min
    """
)
HEAT, SMOKE = device("heat-1", "heat", unit="101"), device("smoke-1", "smoke", unit="101")


def test_a_group_latches_when_all_of_it_held_together() -> None:
    """``within`` on a group latches the group: its leaves had to hold at one time, and it
    counts as true for the window after that."""
    sim = Sim(GROUP_LATCH)
    sim.feed(0, HEAT, temp_c=20)
    sim.feed(70, HEAT, temp_c=55)  # hot and rising together: the group latches
    sim.feed(130, HEAT, temp_c=30)  # cooled: the group alone would be false now
    sim.feed(250, SMOKE, smoke_obs=4)  # smoke within 5 min of the latch
    assert sim.changes() == [(250, "hot-with-smoke-lately", "raised", "Severe")]

    late = Sim(GROUP_LATCH)
    late.feed(0, HEAT, temp_c=20)
    late.feed(70, HEAT, temp_c=55)
    late.feed(130, HEAT, temp_c=30)
    late.feed(400, SMOKE, smoke_obs=4)  # 330 s after the group last held: the latch is gone
    assert late.changes() == []

    apart = Sim(GROUP_LATCH)
    apart.feed(0, HEAT, temp_c=52)  # hot, but not rising
    apart.feed(60, HEAT, temp_c=20)
    apart.feed(120, HEAT, temp_c=48)  # rising, but not hot: never both at one time
    apart.feed(150, SMOKE, smoke_obs=4)
    assert apart.changes() == []


WINDOWS = ruleset(
    """\
    rules:
      - id: smoky-on-average
        kind: smoke
        devices: {kinds: [smoke]}
        create:
          Minor:
            all: [{metric: smoke_obs, agg: mean, over: 5min, op: ">=", value: 1, unit: "%/m"}]
      - id: gone-quiet
        kind: tamper
        devices: {kinds: [locker]}
        create:
          Minor:
            all: [{metric: door_open, agg: count, over: 5min, op: "<", value: 2}]
      - id: peak-seen
        kind: smoke
        devices: {kinds: [smoke]}
        create:
          Minor:
            all: [{metric: smoke_obs, agg: max, over: 5min, op: ">=", value: 3, unit: "%/m"}]
    """
)


def test_a_window_can_turn_true_with_time_alone() -> None:
    """As low samples leave a mean's window, or any leave a "fewer than" count's, the rule
    turns true at a tick, with no new reading."""
    sim = Sim(WINDOWS)
    smoke = device("smoke-1", "smoke")
    sim.feed(0, smoke, smoke_obs=0)
    sim.feed(10, smoke, smoke_obs=0)
    sim.feed(100, LOCKER, door_open=0)  # one reading: fewer than 2 in the window
    sim.feed(110, LOCKER, door_open=1)  # two: cleared
    sim.feed(200, smoke, smoke_obs=2.5)  # mean 0.83: under 1
    for t in range(211, 480, 5):
        sim.tick(t)
    changes = [(t, rule, phase) for t, rule, phase, _ in sim.changes()]
    # The zeros leave the mean's window at 300-310 s (to a bucket, 1 % of it); the locker's
    # first reading leaves the count's at 400 s. The maximum never reached 3.
    assert [(rule, phase) for _, rule, phase in changes] == [
        ("gone-quiet", "raised"),
        ("gone-quiet", "cleared"),
        ("smoky-on-average", "raised"),
        ("gone-quiet", "raised"),
    ]
    assert changes[:2] == [(100, "gone-quiet", "raised"), (110, "gone-quiet", "cleared")]
    assert 300 <= changes[2][0] <= 315 and 400 <= changes[3][0] <= 410


BUILDING = ruleset(
    """\
    rules:
      - id: two-gas-alarms
        kind: gas_building
        scope: building
        devices: {kinds: [gas]}
        create:
          Extreme:
            all:
              - {metric: gas_lel, op: ">=", value: 10, unit: "%LEL"}
    """
)


def test_building_scope_gathers_devices_and_names_the_building() -> None:
    sim = Sim(BUILDING)
    sim.feed(0, device("gas-101", "gas", unit="101"), gas_lel=1)
    sim.feed(1, device("gas-502", "gas", unit="502"), gas_lel=12)
    assert len(sim.log) == 1
    alert = sim.log[0][1]
    assert (alert.key, alert.scope, alert.building, alert.device) == (
        "b1",
        "building",
        "b1",
        "gas-502",
    )
    assert alert.unit is None and alert.alert_key == "two-gas-alarms:b1"


def test_a_message_that_names_missing_evidence_falls_back_to_a_plain_one() -> None:
    rules = ruleset(
        """\
        rules:
          - id: hot
            kind: heat
            message: "hot: {nothing_here:.1f}"
            create:
              Minor:
                all:
                  - {metric: temp_c, op: ">", value: 30, unit: "°C"}
        """
    )
    sim = Sim(rules)
    sim.feed(0, device("t-1", "heat"), temp_c=35)
    assert sim.log[0][1].message.startswith("heat Minor at t-1: temp_c 35")


def test_reload_keeps_unchanged_rules_and_their_timers() -> None:
    sim = Sim("gas")
    sim.feed(0, GAS, gas_lel=12)  # Severe pending, due at t=5
    changed = sim.engine.reload(load_preset("gas"), at(1))
    assert changed == []
    sim.feed(5, GAS, gas_lel=12)
    assert sim.changes() == [(5, "gas-lel", "raised", "Severe")]


def test_reload_of_an_edited_rule_keeps_its_open_alert_and_a_removed_rule_clears() -> None:
    sim = Sim([*load_preset("gas").resolved(), *load_preset("flood").resolved()])
    sim.run(GAS, lambda t: {"gas_lel": 12.0}, 0, 10, 1)
    assert sim.engine.active() == [("gas-lel", "gas-1", "Severe")]
    edited_text = ruleset(
        """\
        rules:
          - id: gas-lel
            kind: gas
            devices: {kinds: [gas]}
            create:
              Severe:
                all:
                  - {metric: gas_lel, op: ">=", value: 20, unit: "%LEL"}
            clear:
              all:
                - {metric: gas_lel, op: "<", value: 15, unit: "%LEL"}
        """
    )
    assert sim.engine.reload(edited_text, at(11)) == []
    assert sim.engine.active() == [("gas-lel", "gas-1", "Severe")]
    sim.feed(12, GAS, gas_lel=12)  # below the new clear level
    assert sim.changes()[-1][1:3] == ("gas-lel", "cleared")
    sim.run(GAS, lambda t: {"gas_lel": 30.0}, 20, 30, 1)
    removed = sim.engine.reload(load_preset("flood"), at(31))
    assert [(c.rule, c.phase.value) for c in removed] == [("gas-lel", "cleared")]
    assert "rule removed" in removed[0].message


def test_snapshot_and_restore_continue_exactly() -> None:
    """Run half, snapshot, restore into a fresh engine, run the rest: same as one run."""

    def drive(sim: Sim, start: int, end: int) -> None:
        for t in range(start, end, 30):
            sim.feed(t, device("co-1", "co"), co_ppm=150.0)
            sim.feed(t, GAS, gas_lel=12.0 if t < 600 else 0.0)

    rules = [*load_preset("co-ul2034").resolved(), *load_preset("gas").resolved()]
    whole = Sim(rules)
    drive(whole, 0, 4000)
    first = Sim(rules)
    drive(first, 0, 1200)
    data = first.engine.snapshot()
    assert isinstance(data, bytes) and len(data) < 20000
    second = Sim(rules)
    second.engine = Engine.restore(rules, data, utc_offset_s=8 * 3600)
    second.log = list(first.log)
    drive(second, 1200, 4000)
    assert second.changes() == whole.changes()
    assert [c[1] for c in whole.changes()] == ["gas-lel", "gas-lel", "co"]


def test_restore_refuses_garbage() -> None:
    with pytest.raises(EngineError):
        Engine.restore(load_preset("gas"), b"not a snapshot")


class Threshold:
    """A stand-in detector: the score is the value over 100, learned values are counted."""

    def __init__(self) -> None:
        self.learned = 0

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.learned += 1

    def score_one(self, x: Mapping[str, float]) -> float:
        return min(1.0, x.get("vibration_mm_s", 0.0) / 100)


SCORED = ruleset(
    """\
    rules:
      - id: pump-anomaly
        kind: pump_anomaly
        devices: {kinds: [pump]}
        create:
          Moderate:
            all:
              - {score: vibration, op: ">=", value: 0.8}
            for: 60s
    """
)


def test_a_score_condition_reads_a_registered_detector() -> None:
    made: list[Threshold] = []

    def factory() -> Threshold:
        made.append(Threshold())
        return made[-1]

    sim = Sim(SCORED, detectors={"vibration": factory})
    pump = device("pump-1", "pump")
    sim.run(pump, lambda t: {"vibration_mm_s": 20.0 if t < 300 else 90.0}, 0, 600, 30)
    assert sim.changes() == [(360, "pump-anomaly", "raised", "Moderate")]
    assert sim.log[0][1].evidence == {"score_vibration": 0.9}
    assert len(made) == 1 and made[0].learned == 13  # not while the alert is open


def test_a_score_naming_no_detector_is_refused() -> None:
    with pytest.raises(EngineError, match="no detector named 'vibration'"):
        Engine(SCORED, detectors={})


def test_a_refused_reload_leaves_the_running_rules_as_they_were() -> None:
    sim = Sim("gas")
    sim.feed(0, GAS, gas_lel=12)  # Severe pending, due at t=5
    with pytest.raises(EngineError, match="no detector named 'vibration'"):
        sim.engine.reload(SCORED, at(1))
    assert [r.id for r in sim.engine.rules] == [r.id for r in load_preset("gas").resolved()]
    sim.feed(5, GAS, gas_lel=12)
    assert sim.changes() == [(5, "gas-lel", "raised", "Severe")]


def test_ticks_only_touch_what_can_change() -> None:
    """A building's worth of quiet devices: a tick does no work for rules without timers."""
    engine = Engine(load_preset("gas"))
    for i in range(200):
        engine.add_devices([device(f"gas-{i}", "gas", unit=str(i))], at(0))
    assert engine.tick(at(10)) == []
    assert engine.state.alerts == {}


REPEATED_SILENCE = ruleset(
    """\
    rules:
      - id: flaky-link
        kind: device_silent
        scope: building
        devices: {kinds: [gas]}
        create:
          Minor:
            all:
              - {silent: 5min}
            repeat: 3
            within: 10min
    """
)


def test_a_repeat_counts_readings_even_of_a_condition_no_reading_makes_true() -> None:
    """A repeated silence counts the readings seen while some device is silent: the idle
    rule must still be judged on every reading, not only when its metrics arrive."""
    quiet, busy = device("gas-101", "gas", unit="101"), device("gas-502", "gas", unit="502")
    sim = Sim(REPEATED_SILENCE)
    sim.feed(0, quiet, gas_lel=0)
    for t in (100, 200):  # gas-101 not yet silent for 5 min: these do not count
        sim.feed(t, busy, gas_lel=0)
    assert sim.log == []
    for t in (400, 500, 600):  # gas-101 silent for 5 min and more: the 3rd raises
        sim.feed(t, busy, gas_lel=0)
    assert sim.changes() == [(600, "flaky-link", "raised", "Minor")]


def test_a_snapshot_reencodes_only_the_devices_heard_from_and_is_the_whole_state() -> None:
    sim = Sim("gas")
    a, b = device("gas-a", "gas", unit="101"), device("gas-b", "gas", unit="102")
    sim.feed(0, a, gas_lel=1)
    sim.feed(0, b, gas_lel=2)
    first = sim.engine.snapshot()
    sim.feed(10, a, gas_lel=30)  # only a changes
    sim.tick(20)
    assert sim.engine.encode_devices(1) == 0  # a, the one changed, encoded ahead
    sim.feed(15, b, gas_lel=3)  # b changes in between: left for the snapshot
    sim.feed(16, b, gas_lel=2)
    second = sim.engine.snapshot()
    whole = msgspec.msgpack.encode(
        msgspec.structs.replace(sim.engine.state, detectors=sim.engine._models)
    )
    assert second == whole and second != first
    restored = Engine.restore(load_preset("gas"), second)
    assert restored.state.devices["gas-a"].metrics["gas_lel"].last == 30
    assert restored.state.devices["gas-b"].metrics["gas_lel"].last == 2


def test_window_aggregates_from_buckets_match_the_samples() -> None:
    """Sums, means, counts and maxima over a window read buckets a hundredth of the window wide
    (O(1) a reading for sums, ~100 buckets a window however chatty the device). Samples a
    bucket or more apart are each their own bucket and the window is exact; denser ones take
    in a whole bucket at the window's start, so the window holds the samples after some time
    at most one bucket before its start. A window of zeros sums to exactly 0."""
    leaves = [
        Condition(metric="vibration_mm_s", agg=agg, over="5min", op=">=", value=1.0, unit="mm/s")
        for agg in ("sum", "mean", "count", "max")
    ]
    width = 300.0 * BUCKET_FRACTION
    for steps, seed in (([3.0, 5.0, 40.0], 11), ([0.05, 0.5, 3.0], 12)):
        rng = random.Random(seed)
        track = DeviceTrack(info=device("p1", "pump"), first_at=0.0)
        samples: list[tuple[float, float]] = []
        t = 0.0
        for n in range(3000):
            t += rng.choice(steps)
            value = 0.0 if 1000 <= n < 2000 else rng.choice([0.0, 0.1, 2.7, 1e6])
            samples.append((t, value))
            track.record({"vibration_mm_s": value}, t, t)
            track.trim("vibration_mm_s", 0.0, window=300.0, width=width)
            metric = track.metrics["vibration_mm_s"]
            got = [_aggregate(metric, leaf, t) for leaf in leaves]
            inside = [v for at_, v in samples if at_ > t - 300.0]
            reach = [v for at_, v in samples if at_ > t - 300.0 - width]
            count = int(got[2] or 0)
            assert len(inside) <= count <= len(reach)
            if steps[0] >= width:
                assert count == len(inside)
            taken = [v for _, v in samples[-count:]]  # the newest ``count`` samples
            assert got[0] == pytest.approx(sum(taken), rel=1e-12, abs=1e-6)
            assert got[1] == pytest.approx(sum(taken) / len(taken), rel=1e-12, abs=1e-6)
            assert got[3] == max(taken)
            if 1100 <= n < 2000 and steps[0] >= width:  # five minutes of zeros
                assert got[0] == 0.0
            assert len(metric.buckets) <= 300.0 / width + 2
            assert metric.history == []  # no rate reads it
    # A track restored from a snapshot taken before buckets (every sample in its history)
    # builds them from its samples.
    metric.buckets = []
    metric.history = samples[-2000:]
    track.record({"vibration_mm_s": 1.5}, t + 1, t + 1)
    track.trim("vibration_mm_s", 0.0, window=300.0, width=width)
    count = int(_aggregate(metric, leaves[2], t + 1) or 0)
    taken = [v for _, v in [*samples, (t + 1, 1.5)][-count:]]
    assert _aggregate(metric, leaves[0], t + 1) == pytest.approx(sum(taken))
    assert count >= len([1 for at_, _ in samples if at_ > t + 1 - 300.0]) + 1
    assert metric.history == []


def test_a_metric_only_rates_read_keeps_samples_a_hundredth_of_the_window_apart() -> None:
    """At 30 readings/s a 60 s rate kept 1,800 samples; spaced 0.6 s it keeps ~100, and the
    rate moves by about 1 %. A device reporting every second or slower keeps every one."""
    leaf = Condition(rate="temp_c", over="60s", op=">=", value=8, unit="°C/min")
    for interval, close in ((1 / 30, 0.02), (1.0, 0.0)):
        thin = DeviceTrack(info=device("h1", "heat"), first_at=0.0)
        full = DeviceTrack(info=device("h2", "heat"), first_at=0.0)
        steps = int(300 / interval)
        for n in range(steps):
            t = n * interval
            value = 20.0 + (t / 60.0) ** 2  # heating faster and faster
            for track, spacing in ((thin, 0.6), (full, 0.0)):
                track.record({"temp_c": value}, t, t)
                track.trim("temp_c", 0.0, rates=60.0, spacing=spacing)
            if n > steps // 2:
                expected = rate_of(full.metrics["temp_c"], leaf)
                got = rate_of(thin.metrics["temp_c"], leaf)
                assert expected is not None and got is not None
                assert abs(got - expected) <= close * expected
        kept, all_kept = len(thin.metrics["temp_c"].history), len(full.metrics["temp_c"].history)
        if interval < 0.6:
            assert kept <= 60 / 0.6 + 2 < all_kept
        else:
            assert kept == all_kept


def test_windows_of_very_different_lengths_on_one_metric_stay_bounded_and_within_one_percent() -> (
    None
):
    """A mean over a minute beside a maximum over a day (and rates over a minute and a day) on
    one metric: buckets a hundredth of a minute wide, kept for a day, were 43,200 a day at a
    reading every 2 s (600,000 for 7 days at 1/s; the maximum scanned them all). Old buckets
    are merged and old rate samples thinned as they age (signals._merge_old, _thin_old): each
    window still reaches back at most 1 % further than it says, each aggregate is still that
    of the newest samples, and a rate still reads a real sample at most 1 % of its window
    before the window's start."""
    over = {"mean": 60.0, "sum": 3600.0, "count": 6 * 3600.0, "max": 86400.0, "min": 86400.0}
    leaves = {
        agg: msgspec.structs.replace(
            Condition(metric="temp_c", agg="last", op=">=", value=1.0, unit="°C"),
            agg=agg,
            over=f"{span:g}s",
        )
        for agg, span in over.items()
    }
    rates = [
        Condition(rate="temp_c", over=f"{s:g}s", op=">=", value=0.1, unit="°C/min")
        for s in (60.0, 86400.0)
    ]
    rng = random.Random(5)
    track = DeviceTrack(info=device("h1", "heat"), first_at=0.0)
    samples: list[tuple[float, float]] = []
    value_at: dict[float, float] = {}
    t = 0.0
    oldest: dict[str, float] = {}
    for n in range(60_000):  # 33 hours, a reading every 0.3-5 s
        interval = rng.choice([0.3, 1.0, 1.0, 2.0, 5.0])
        t += interval
        value = round(rng.uniform(15.0, 30.0), 2)
        samples.append((t, value))
        value_at[t] = value
        track.record({"temp_c": value}, t, t)
        track.trim(
            "temp_c",
            0.0,
            rates=86400.0,
            spacing=0.6,
            window=86400.0,
            width=0.6,
            windows=tuple(sorted(set(over.values()))),
        )
        kept = track.metrics["temp_c"]
        # A sample that has left a window never comes back into it: the first sample each
        # window reads only moves on (a maximum over it must not rise with time alone).
        for agg, span in over.items():
            start = bisect.bisect_right(kept.buckets, t - span, key=lambda b: b.last)
            assert kept.buckets[start].first >= oldest.get(agg, 0.0), (agg, n)
            oldest[agg] = kept.buckets[start].first
        if n % 1500:
            continue
        for agg, leaf in leaves.items():
            got = _aggregate(kept, leaf, t)
            assert got is not None
            # The buckets the window reads, from the first with a sample inside it.
            start = bisect.bisect_right(kept.buckets, t - over[agg], key=lambda b: b.last)
            taken_n = sum(b.count for b in kept.buckets[start:])
            inside = [v for at_, v in samples if at_ > t - over[agg]]
            reach = [v for at_, v in samples if at_ > t - over[agg] * 1.01]
            assert len(inside) <= taken_n <= len(reach), (agg, n)
            taken = [v for _, v in samples[-taken_n:]]  # the newest ones
            expected = {
                "mean": sum(taken) / len(taken),
                "sum": sum(taken),
                "count": float(len(taken)),
                "max": max(taken),
                "min": min(taken),
            }[agg]
            assert got == pytest.approx(expected, rel=1e-9), (agg, n)
        for leaf in rates:
            span = seconds(leaf.over or "0")
            older = bisect.bisect_right(kept.history, (t - span, math.inf))
            if t - span < samples[0][0]:
                assert rate_of(kept, leaf) is None
                continue
            t0, v0 = kept.history[older - 1]
            assert value_at[t0] == v0  # a real sample, as it was read
            assert t - span - max(5.0, 0.01 * span) <= t0 <= t - span
            assert rate_of(kept, leaf) == pytest.approx((value - v0) / (t - t0) * 60.0)
    # Bounded: ~100 a window's hundredth for the newest minute, a few hundred per tenfold of
    # age after it, where every bucket and sample was kept before (43,200 in the last day).
    assert len(kept.buckets) < 2_500 and len(kept.history) < 2_500


def test_a_window_aggregate_keeps_buckets_and_a_rate_samples_apart() -> None:
    rules = ruleset(
        """\
        rules:
          - id: hot
            kind: heat
            devices: {kinds: [heat]}
            create:
              Minor:
                any:
                  - {rate: temp_c, over: 60s, op: ">=", value: 8, unit: "°C/min"}
                  - {metric: temp_c, agg: max, over: 5min, op: ">=", value: 50, unit: "°C"}
                  - {rate: co_ppm, over: 2min, op: ">=", value: 10, unit: ppm/min}
        """
    )
    sim = Sim(rules)
    heat = device("h1", "heat")
    for n in range(300):  # 10 readings a second
        sim.feed(n / 10, heat, temp_c=20 + n / 100, co_ppm=1.0)
    metrics = sim.engine.state.devices["h1"].metrics
    # The max over 5 minutes: 30 s of samples in buckets 3 s wide; the exact maximum.
    assert len(metrics["temp_c"].buckets) <= 11
    assert max(b.high for b in metrics["temp_c"].buckets) == pytest.approx(22.99)
    assert len(metrics["temp_c"].history) <= 30 / 0.6 + 2  # its rate's samples, 0.6 s apart
    assert len(metrics["co_ppm"].history) < 30  # only a rate: 1.2 s apart
    assert metrics["co_ppm"].buckets == []


def test_a_snapshot_from_before_buckets_reads_its_windows_at_once_after_restore() -> None:
    """Such a snapshot kept every sample in the history; restored, the windows read them
    before the metric's next reading (an event sensor may not report for hours)."""
    rules = load_preset("pump")
    sim = Sim(rules)
    pump = device("p1", "pump")
    for n in range(60):
        sim.feed(n * 5.0, pump, vibration_mm_s=1.0 + n / 100)
    state = sim.engine.state
    metric = state.devices["p1"].metrics["vibration_mm_s"]
    leaf = Condition(
        metric="vibration_mm_s", agg="mean", over="5min", op=">=", value=4.5, unit="mm/s"
    )
    expected = _aggregate(metric, leaf, 295.0)
    # As an older version saved it: every sample of the window in the history, no buckets.
    metric.history = [(n * 5.0, 1.0 + n / 100) for n in range(60)]
    metric.buckets = []
    restored = Engine.restore(rules, sim.engine.snapshot())
    again = restored.state.devices["p1"].metrics["vibration_mm_s"]
    assert again.buckets and _aggregate(again, leaf, 295.0) == pytest.approx(expected)


def test_a_device_falls_silent_on_time_after_the_clock_is_set_back() -> None:
    """A tick visits a silence rule's idle devices only once one can be silent (readings only
    put that off); a clock set back (NTP after a boot with the clock ahead) brings it on."""
    engine = Engine(load_preset("device-health"))
    smoke = device("sm1", "smoke", interval_s=10.0)
    engine.add_devices([smoke], at(0))

    def reading(seq: int, t: float) -> Reading:
        return Reading(device="sm1", seq=seq, ts=at(t), values={"smoke_obs": 0.1})

    engine.feed(smoke, reading(1, 3600), at(3600))
    assert engine.tick(at(3601)) == []  # none silent before 3630
    engine.feed(smoke, reading(2, 100), at(100))  # the clock goes back an hour
    raised = [t.rule for t in engine.tick(at(131)) if t.phase.value == "raised"]
    assert raised == ["device-silent"]


def test_a_hold_and_a_clear_run_on_after_the_clock_is_set_back() -> None:
    """A leak that began while the clock was an hour ahead must not wait out that hour for its
    alarm once NTP sets the clock back, nor its clear keep the siren on as long (gas-lel:
    Severe after 5 s at 10 %LEL, clear after 10 s below 5 %)."""
    sim = Sim("gas")
    gas = device("g1", "gas")
    sim.feed(3600, gas, gas_lel=12.0)  # the hold starts, the clock an hour ahead
    sim.feed(100, gas, gas_lel=12.0)  # NTP: back an hour
    sim.tick(104)
    assert sim.first(Phase.RAISED) is None
    sim.tick(105)
    assert sim.first(Phase.RAISED) == 105, "5 s of gas, not an hour and 5 s"
    sim.feed(7200, gas, gas_lel=1.0)  # the clear's hold starts, the clock ahead again
    sim.feed(200, gas, gas_lel=1.0)  # and back
    sim.tick(210)
    assert sim.first(Phase.CLEARED) == 210, "10 s below 5 %LEL, not two hours"


RISE = """\
rules:
  - id: rising-heat
    kind: heat
    scope: unit
    devices: {kinds: [heat]}
    create:
      Severe:
        all: [{rate: temp_c, over: 60s, op: ">=", value: 8, unit: "°C/min"}]
"""


def test_a_rate_of_rise_sees_again_soon_after_the_clock_is_set_back() -> None:
    """Samples stamped while the clock was an hour ahead must not leave a rate with no sample
    old enough (nor new samples unkept) for that hour: a fire's rise is seen within a window
    of the rise."""
    sim = Sim(load_yaml(RISE, RuleSet, "test"))
    heat = device("h1", "heat")
    for t in range(3600, 3700, 5):  # steady, while the clock is ahead
        sim.feed(t, heat, temp_c=22.0)
    for t in range(100, 300, 5):  # set back an hour; from 150 s the room heats 12 °C/min
        sim.feed(t, heat, temp_c=22.0 + max(0.0, t - 150) / 5)
    raised = sim.first(Phase.RAISED)
    assert raised is not None and raised <= 150 + 70, raised


HOT_FLAT = ruleset(
    """\
    rules:
      - id: hot-flat
        kind: fire
        scope: unit
        devices: {kinds: [heat]}
        create:
          Severe:
            any: [{metric: temp_c, op: ">=", value: 60, unit: "°C"}]
        clear:
          all: [{metric: temp_c, op: "<", value: 40, unit: "°C"}]
    """
)


def test_a_flats_alarm_whose_raising_device_is_removed_is_judged_on_those_left() -> None:
    """The flat's alarm stays, and clears by its own clear condition on the sensors still
    there: the removed one's last reading (hot) no longer holds it up."""
    other = device("heat-2", "heat", unit="101")
    sim = Sim(HOT_FLAT)
    sim.feed(0, HEAT, temp_c=70)
    sim.feed(10, other, temp_c=65)
    assert sim.changes() == [(0, "hot-flat", "raised", "Severe")]
    assert sim.engine.forget_devices({"heat-2"}, at(20)) == []  # heat-2 holds it
    sim.feed(30, other, temp_c=25)
    assert sim.changes()[-1] == (30, "hot-flat", "cleared", "Severe")

    warm = Sim(HOT_FLAT)
    warm.feed(0, HEAT, temp_c=70)
    warm.feed(10, other, temp_c=45)  # warm: under the create level, over the clear
    assert warm.engine.forget_devices({"heat-2"}, at(20)) == []  # hysteresis: it stays
    warm.feed(30, other, temp_c=45)
    assert warm.changes()[-1][2] == "raised"
    warm.feed(40, other, temp_c=30)  # the clear, judged on heat-2 alone
    assert warm.changes()[-1] == (40, "hot-flat", "cleared", "Severe")


def test_an_alarm_left_behind_by_a_device_that_moved_clears() -> None:
    """A device moved to another flat (a discovered sensor announcing a new unit, or a config
    edit): its old flat's alarm has no device left to judge it, and clears."""
    sim = Sim(HOT_FLAT)
    sim.feed(0, HEAT, temp_c=70)
    moved = device("heat-1", "heat", unit="102")
    sim.engine.add_devices([moved], at(10))
    [cleared] = sim.engine.forget_devices({"heat-1"}, at(10))
    assert (cleared.key, cleared.phase.value) == ("b1/101", "cleared")
    assert "b1/101" not in sim.engine.state.alerts["hot-flat"]
    sim.feed(20, moved, temp_c=70)
    assert sim.changes()[-1] == (20, "hot-flat", "raised", "Severe")
    assert sim.log[-1][1].key == "b1/102"
