"""What the engine remembers about each device, and how one condition reads it.

State is plain msgspec Structs (times are seconds since the epoch, the gateway's clock), so the
engine can snapshot it to bytes and the edge can keep it in SQLite.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from itertools import pairwise

import msgspec

from rules.co_dose import Dose, equilibrium
from rules.durations import seconds
from rules.language import UNITLESS, Condition, RoutineTimes, parse_clock, parse_hours
from rules.routine import Routine, UpBy
from wire.metrics import metric
from wire.replay import DeviceInfo

# Metrics that rest at one value for days when all is well: "stuck: '*'" leaves them out.
RESTING = {"battery_pct", "parcel_age_h", "co_ppm", "gas_lel", "smoke_obs", "water_level_cm"}
AWAY_GRACE_S = 120.0  # presence this soon after the door opened was the leaving itself
UP_BY_MARGIN = "1h"  # "not up by": the default time allowed after the usual wake time


class Bucket(msgspec.Struct, array_like=True):
    """A metric's samples that arrived within a hundredth of a window of the first of them
    (BUCKET_FRACTION), summed up for the aggregates over windows."""

    first: float  # when the first and the last of them arrived
    last: float
    count: int
    total: float
    low: float
    high: float
    # Running totals over this metric's buckets so far, this one included: a window's sum
    # and count in O(1), not O(window).
    total_to: float
    count_to: int


class MetricTrack(msgspec.Struct):
    last: float
    at: float
    # (at, value) samples for rates, as far back as the longest rate window, at least a
    # hundredth of the shortest apart (RATE_SPACING).
    history: list[tuple[float, float]] = []
    # The samples in buckets for sums, means, counts, minima and maxima over windows: at most
    # ~100 a window however often the device reports (1,800 a minute at 30 readings/s).
    buckets: list[Bucket] = []
    steady_since: float = 0.0  # the value has stayed within tolerance of ``anchor`` since
    anchor: float = 0.0
    nonzero_at: float | None = None  # the last time the value was not 0 (flags, doors)

    def bucket_history(self, width: float) -> None:
        """Buckets from the samples a snapshot from before buckets kept (every one)."""
        for at, value in self.history:
            _bucket(self.buckets, at, value, width)


class DeviceTrack(msgspec.Struct):
    info: DeviceInfo
    first_at: float
    last_at: float | None = None
    skew_s: float = 0.0  # device clock minus gateway clock, at the last reading
    metrics: dict[str, MetricTrack] = {}
    doses: dict[str, Dose] = {}
    scores: dict[str, float] = {}
    # Channels whose latest value was outside the sensor's physical range (the value), until
    # one inside it: the ``out_of_range`` leaf's. Their tracks keep the last good value.
    faulted: dict[str, float] = {}

    def record(self, values: dict[str, float], at: float, device_ts: float) -> None:
        self.last_at = at
        self.skew_s = device_ts - at
        for name, value in values.items():
            track = self.metrics.get(name)
            if track is None:
                self.metrics[name] = MetricTrack(
                    value, at, steady_since=at, anchor=value, nonzero_at=at if value else None
                )
                continue
            track.last, track.at = value, at
            if value:
                track.nonzero_at = at

    def fault(self, values: Mapping[str, float], outside: Mapping[str, float] | None) -> None:
        """A reading's good ``values`` end their channels' faults; ``outside``, the values
        left out of it as outside their physical range, start or go on with theirs."""
        faulted = self.faulted
        for name in values:
            faulted.pop(name, None)
        if outside:
            faulted.update(outside)

    def trim(
        self,
        name: str,
        tolerance: float,
        rates: float = 0.0,
        spacing: float = 0.0,
        window: float = 0.0,
        width: float = 0.0,
        windows: tuple[float, ...] = (),
    ) -> None:
        """Keep the new value as the rules need it: in the samples for rates up to ``rates``
        seconds back (at least ``spacing`` apart), in the buckets for window aggregates up to
        ``window`` back (each ``width`` wide; ``windows``: every window's length, which no
        merge of old buckets may straddle); and follow how long it has been steady."""
        track = self.metrics[name]
        history, buckets = track.history, track.buckets
        if window > 0:
            if not buckets and history:  # a snapshot from before buckets (Engine.restore)
                track.bucket_history(width)
            started = _bucket(buckets, track.at, track.last, width)
            # Drop the buckets no window can reach: those whose last sample is at or before
            # the longest window's start (bisect: a chatty device's list is long).
            drop = bisect_right(buckets, track.at - window, key=_last_of)
            if drop:
                del buckets[:drop]
            if started and len(buckets) > COMPACT_AT and _due(buckets[-2].first, track.at, width):
                _merge_old(buckets, track.at, windows)
        elif buckets:
            buckets.clear()
        if rates > 0:
            # A rate reads the latest value and one sample a window older, so a sample that
            # close to the last one kept adds nothing a rate needs (see RATE_SPACING).
            started = not (spacing and history and track.at - history[-1][0] < spacing)
            if started:
                history.append((track.at, track.last))
            # Keep the newest sample at or before the window's start (a rate needs one that
            # old) and everything after it.
            drop = bisect_right(history, (track.at - rates, _LAST)) - 1
            if drop > 0:
                del history[:drop]
            if started and len(history) > COMPACT_AT and _due(history[-2][0], track.at, spacing):
                _thin_old(history, track.at)
        elif history:
            history.clear()
        if abs(track.last - track.anchor) > tolerance:
            track.anchor, track.steady_since = track.last, track.at


def _bucket(buckets: list[Bucket], at: float, value: float, width: float) -> bool:
    """Add a sample to the newest bucket, or start one if it began ``width`` or more ago
    (then True)."""
    if buckets:
        newest = buckets[-1]
        if at - newest.first < width:
            if at > newest.last:  # a clock set back must not unsort the buckets
                newest.last = at
            newest.count += 1
            newest.total += value
            newest.total_to += value
            newest.count_to += 1
            if value < newest.low:
                newest.low = value
            elif value > newest.high:
                newest.high = value
            return False
        total_to, count_to = newest.total_to + value, newest.count_to + 1
    else:
        total_to, count_to = value, 1
    buckets.append(Bucket(at, at, 1, value, value, value, total_to, count_to))
    return True


def _last_of(bucket: Bucket) -> float:
    return bucket.last


def _merge_old(buckets: list[Bucket], now: float, windows: tuple[float, ...]) -> None:
    """Merge runs of adjacent buckets that span no more than BUCKET_FRACTION of their age.

    A window reads whole buckets from the first whose last sample is inside it, so a bucket
    that old may take it back at most that fraction of its length further: the same bound as
    the newest buckets' width. Only windows of very different lengths on one metric need it
    (``mean over 1min`` beside ``max over 7d``: 100 buckets a minute, kept for 7 days, were
    ~600,000 a device); then it keeps a few hundred per tenfold of their ratio. No merge
    straddles the start of one of ``windows``: a bucket that has left a window, merged with
    one still in it, would bring its samples back into it (a maximum would rise with time).
    """
    merged: list[Bucket] = []
    starts = [now - length for length in windows]
    for bucket in buckets:
        if merged:
            run = merged[-1]
            if bucket.last - run.first <= BUCKET_FRACTION * (now - bucket.last) and not any(
                run.last <= start < bucket.last for start in starts
            ):
                run.last = max(run.last, bucket.last)
                run.count += bucket.count
                run.total += bucket.total
                run.low = min(run.low, bucket.low)
                run.high = max(run.high, bucket.high)
                run.total_to, run.count_to = bucket.total_to, bucket.count_to
                continue
        merged.append(bucket)
    buckets[:] = merged


def _thin_old(history: list[tuple[float, float]], now: float) -> None:
    """Drop samples for rates where their neighbours are no more than RATE_SPACING of their
    age apart: a rate over ``over`` then reads a sample at most that fraction of ``over``
    older than its window's start, as the spacing of the newest samples allows (see
    _merge_old: a 1-minute rate beside a 1-day one kept 100 samples a minute for a day)."""
    kept = [history[0]]
    for (at, value), (next_at, _) in pairwise(history[1:]):
        if next_at - kept[-1][0] > RATE_SPACING * (now - next_at):
            kept.append((at, value))
    kept.append(history[-1])
    history[:] = kept


# Window aggregates read buckets a hundredth of their shortest window wide: a window then
# takes in whole buckets, so it may reach back up to 1 % further than it says (3 s in 5 min).
# A device reporting less often than that (every 3 s and slower for a 5-minute window) has a
# bucket per sample, and its windows are exact.
BUCKET_FRACTION = 0.01


# Rates keep one sample per this fraction of their metric's shortest rate window (0.6 s for a
# 60 s rate): a rate then spans at most 1 % more than its window. Devices that report every
# second or slower keep every sample; one sending 30 a second (the benchmark's) kept 1,800 for
# a 60 s rate, and the state saves and the memory grew with them.
RATE_SPACING = 0.01


# Past this many buckets (or rate samples) a metric's windows differ greatly in length: the
# old ones are merged (_merge_old, _thin_old) about once every COMPACT_EVERY new ones (or
# COMPACT_EVERY widths of time, whichever is longer), so a merge's pass over them costs a
# new bucket a few steps however often, or seldom, the device reports. The presets keep
# ~100 and never get there.
COMPACT_AT = 256
COMPACT_EVERY = 64


def _due(before: float, at: float, width: float) -> bool:
    """Whether a new bucket (sample) at ``at``, after one begun at ``before``, merges old
    ones: when a multiple of the period falls between the two, the period being COMPACT_EVERY
    times the longer of the width and this gap between buckets."""
    if width <= 0:
        return False
    period = COMPACT_EVERY * max(width, at - before)
    return at // period != before // period


# Bisecting (at, value) samples at (t, _LAST) finds the first sample after t, as a key on
# ``at`` would, without a Python call per step (this runs several times a reading).
_LAST = math.inf


def dose_key(leaf: Condition) -> str:
    # Asked for every CO reading and, on each tick, every CO scope: made once per leaf (a
    # leaf is not hashable; the cache holds it, so its id is not reused while cached).
    found = _DOSE_KEYS.get(id(leaf))
    if found is not None and found[0] is leaf:
        return found[1]
    key = f"{leaf.cohb}:{leaf.work:g}:{leaf.cohb0:g}"
    if len(_DOSE_KEYS) >= 4096:  # rule sets reloaded many times over
        _DOSE_KEYS.clear()
    _DOSE_KEYS[id(leaf)] = (leaf, key)
    return key


_DOSE_KEYS: dict[int, tuple[Condition, str]] = {}


def dose_may_reach(leaves: Sequence[Condition], devices: Sequence[DeviceTrack]) -> bool:
    """Whether one of these ``cohb >= value`` leaves can hold on one of the devices without a
    new reading. With no reading the concentration stays at its last value, and the COHb
    moves from where it was straight toward that level's equilibrium: if both are under the
    threshold, so is every value in between (no exponential to compute)."""
    for leaf in leaves:
        assert leaf.value is not None
        # A hair under the threshold: the mix of the two can round up to it.
        key, value = dose_key(leaf), leaf.value * (1 - 1e-9) - 1e-12
        for device in devices:
            dose = device.doses.get(key)
            if dose is not None and (dose.cohb >= value or equilibrium(dose.ppm) >= value):
                return True
    return False


@dataclass(slots=True)
class Context:
    """What a condition reads besides the scope's devices."""

    now: float
    utc_offset_s: float
    routines: dict[str, Routine]
    scope_key: str
    times: RoutineTimes | None = None  # the scope's own usual times (the rule set's routines)


Evidence = dict[str, float]
Result = tuple[bool, Evidence, str | None]
_FALSE: Result = (False, {}, None)


# The comparison operators, as C functions: this runs for every device of a scope.
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def compare(value: float, op: str, threshold: float) -> bool:
    return OPERATORS[op](value, threshold)


def routine_key(scope_key: str, leaf: Condition) -> str:
    return f"{scope_key}|{','.join(sorted(leaf.inactive or []))}"


def _aggregate(track: MetricTrack, leaf: Condition, now: float) -> float | None:
    if leaf.agg == "last" or leaf.over is None:
        return track.last
    buckets = track.buckets
    # The buckets with a sample in the window (see BUCKET_FRACTION).
    start = bisect_right(buckets, now - seconds(leaf.over), key=_last_of)
    if start >= len(buckets):
        return 0.0 if leaf.agg in ("count", "sum") else None
    first, newest = buckets[start], buckets[-1]
    if leaf.agg == "count":
        return float(newest.count_to - first.count_to + first.count)
    if leaf.agg in ("sum", "mean"):
        # Running totals subtract exactly where it matters: a window of zeros sums to 0.0.
        total = newest.total_to - first.total_to + first.total
        if leaf.agg == "sum":
            return total
        return total / (newest.count_to - first.count_to + first.count)
    if leaf.agg == "min":
        return min(bucket.low for bucket in buckets[start:])
    return max(bucket.high for bucket in buckets[start:])


def rate_of(track: MetricTrack, leaf: Condition) -> float | None:
    """Change per minute (or per second) from the newest sample at least ``over`` older."""
    assert leaf.over is not None and leaf.unit is not None
    newest_at = track.at
    older = bisect_right(track.history, (newest_at - seconds(leaf.over), _LAST))
    if not older:
        return None
    t0, v0 = track.history[older - 1]
    per_second = (track.last - v0) / (newest_at - t0)
    return per_second if leaf.unit.endswith("/s") else per_second * 60.0


def _device_value(leaf: Condition, device: DeviceTrack, now: float) -> tuple[str, float] | None:
    """The number a compared leaf tests on one device, with its evidence name."""
    if leaf.metric is not None:
        if "*" in leaf.metric:
            return _any_door(leaf, device)
        track = device.metrics.get(leaf.metric)
        value = None if track is None else _aggregate(track, leaf, now)
        return None if value is None else (leaf.metric, value)
    if leaf.rate is not None:
        track = device.metrics.get(leaf.rate)
        rate = None if track is None else rate_of(track, leaf)
        return None if rate is None else (f"{leaf.rate}_rate", rate)
    if leaf.cohb is not None:
        dose = device.doses.get(dose_key(leaf))
        return None if dose is None else ("cohb_pct", dose.now(now, leaf.work))
    if leaf.score is not None:
        score = device.scores.get(leaf.score)
        return None if score is None else (f"score_{leaf.score}", score)
    return None


def _any_door(leaf: Condition, device: DeviceTrack) -> tuple[str, float] | None:
    """``door_*_temp_c``: the first door whose value meets the comparison, else the first."""
    assert leaf.metric is not None and leaf.op is not None and leaf.value is not None
    found = [
        (name, track.last)
        for name, track in device.metrics.items()
        if fnmatchcase(name, leaf.metric)
    ]
    meeting = [item for item in found if compare(item[1], leaf.op, leaf.value)]
    chosen = meeting or found
    return chosen[0] if chosen else None


def _analogue(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        found = metric(name)
        if found is not None and found.unit not in UNITLESS and name not in RESTING:
            out.append(name)
    return out


def silence_limit(leaf: Condition, device: DeviceTrack) -> float:
    """How long a ``silent`` or ``silent_intervals`` leaf waits for on this device."""
    if leaf.silent is not None:
        return seconds(leaf.silent)
    return (leaf.silent_intervals or 0) * device.info.interval_s


def silence(leaf: Condition, device: DeviceTrack, now: float) -> Result:
    """A ``silent`` or ``silent_intervals`` leaf on one device at ``now``."""
    limit = silence_limit(leaf, device)
    quiet = now - (device.last_at if device.last_at is not None else device.first_at)
    return (quiet >= limit, {"silent_s": quiet}, device.info.id)


def _device_fault(leaf: Condition, device: DeviceTrack, ctx: Context) -> Result:
    if leaf.silent is not None or leaf.silent_intervals is not None:
        return silence(leaf, device, ctx.now)
    if leaf.clock_skew is not None or leaf.out_of_range is not None:
        return reading_fault(leaf, device)
    if leaf.stuck is not None:
        assert leaf.over is not None
        names = [leaf.stuck] if leaf.stuck != "*" else _analogue(list(device.metrics))
        for name in names:
            track = device.metrics.get(name)
            if track is not None and track.at - track.steady_since >= seconds(leaf.over):
                return (True, {name: track.last, "steady_s": track.at - track.steady_since}, None)
        return _FALSE
    return _FALSE


def reading_fault(leaf: Condition, device: DeviceTrack) -> Result:
    """A ``clock_skew`` or ``out_of_range`` leaf on one device: a test of what its latest
    readings carry, and of nothing else (not of time, nor of other devices)."""
    if leaf.clock_skew is not None:
        if device.last_at is None:
            return _FALSE
        ok = abs(device.skew_s) >= seconds(leaf.clock_skew)
        return (ok, {"skew_s": device.skew_s}, device.info.id)
    if leaf.out_of_range is not None:
        wanted = leaf.out_of_range  # "*", a metric, or a locker's "door_*_open"
        for name, value in device.faulted.items():
            if fnmatchcase(name, wanted):
                return (True, {name: value}, device.info.id)
        # A value fed as it came (a replay or a test that did not split it off): its track's.
        names = (
            [wanted] if "*" not in wanted else [n for n in device.metrics if fnmatchcase(n, wanted)]
        )
        for name in names:
            found, track = metric(name), device.metrics.get(name)
            if (
                found is not None
                and track is not None
                and not found.low <= track.last <= found.high
            ):
                return (True, {name: track.last}, device.info.id)
    return _FALSE


def _local_minute(now: float, utc_offset_s: float) -> int:
    local = datetime.fromtimestamp(now + utc_offset_s, UTC)
    return local.hour * 60 + local.minute


def _in_hours(text: str, ctx: Context) -> bool:
    start, end = parse_hours(text)
    minute = _local_minute(ctx.now, ctx.utc_offset_s)
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


def up_by(leaf: Condition, times: RoutineTimes | None) -> UpBy | None:
    """The "not up by" check of an ``inactive`` leaf in a scope: the leaf's wake time (none:
    no check), replaced by the scope's own times where the rule set gives them."""
    if leaf.wake is None:
        return None
    wake, weekend, margin = leaf.wake, leaf.weekend_wake, leaf.margin
    if times is not None:
        wake, weekend, margin = times.wake, times.weekend_wake, times.margin or margin
    minute = parse_clock(wake)
    return UpBy(
        wake_min=minute,
        weekend_min=minute if weekend is None else parse_clock(weekend),
        margin_s=seconds(margin or UP_BY_MARGIN),
    )


def _inactive(leaf: Condition, devices: Sequence[DeviceTrack], ctx: Context) -> Result:
    # Only a scope with a sensor for these metrics can be inactive (a bed mat in the
    # resident's scope says nothing about motion), even with a routine learned from a sensor
    # since removed or moved away.
    names = leaf.inactive or []
    if not any(name in d.metrics for d in devices for name in names):
        return _FALSE
    routine = ctx.routines.get(routine_key(ctx.scope_key, leaf))
    since = routine.last_activity if routine and routine.last_activity is not None else None
    if since is None:
        since = min((d.first_at for d in devices), default=ctx.now)
    check = up_by(leaf, ctx.times)
    if check is not None and _gone_out(leaf, devices):
        check = None  # out early (a walk, the market): "not back home" is the rule for that
    limit = (routine or Routine()).limit(since, seconds(leaf.default), ctx.utc_offset_s, check)
    quiet = ctx.now - since
    evidence = {"inactive_h": quiet / 3600, "limit_h": limit / 3600}
    if check is not None and since + limit >= check.deadline(since, ctx.utc_offset_s):
        # The morning deadline set the limit: "not up by" (local hours, e.g. 6.5 = 06:30).
        local = check.deadline(since, ctx.utc_offset_s) + ctx.utc_offset_s
        evidence["up_by_h"] = (local % 86400) / 3600
    return (quiet >= limit, evidence, None)


def _gone_out(leaf: Condition, devices: Sequence[DeviceTrack]) -> bool:
    """The last activity was a door (an activity metric that is not presence) and no presence
    was seen after it: the resident went out, as ``away`` judges it."""
    doors = [name for name in leaf.inactive or [] if name not in leaf.presence]
    left = _last_nonzero(devices, doors)
    if left is None:
        return False
    seen = _last_nonzero(devices, leaf.presence)
    return seen is None or seen <= left + AWAY_GRACE_S


def _last_nonzero(devices: Sequence[DeviceTrack], names: Sequence[str]) -> float | None:
    times = [
        t.nonzero_at
        for d in devices
        for name in names
        if (t := d.metrics.get(name)) is not None and t.nonzero_at is not None
    ]
    return max(times, default=None)


def _away(leaf: Condition, devices: Sequence[DeviceTrack], ctx: Context) -> Result:
    assert leaf.away is not None and leaf.over is not None
    exits = [
        t.nonzero_at
        for d in devices
        if (t := d.metrics.get(leaf.away)) is not None and t.nonzero_at is not None
    ]
    if not exits:
        return _FALSE
    left = max(exits)
    seen = [
        t.nonzero_at
        for d in devices
        for name in leaf.presence
        if (t := d.metrics.get(name)) is not None and t.nonzero_at is not None
    ]
    if seen and max(seen) > left + AWAY_GRACE_S:
        return _FALSE
    away = ctx.now - left
    return (away >= seconds(leaf.over), {"away_h": away / 3600}, None)


def evaluate_leaf(leaf: Condition, devices: Sequence[DeviceTrack], ctx: Context) -> Result:
    """Whether the leaf holds in the scope: for device tests, on any of its devices."""
    if leaf.hours is not None:
        return (_in_hours(leaf.hours, ctx), {}, None)
    if leaf.inactive is not None:
        return _inactive(leaf, devices, ctx)
    if leaf.away is not None:
        return _away(leaf, devices, ctx)
    if leaf.op is None:
        for device in devices:
            result = _device_fault(leaf, device, ctx)
            if result[0]:
                return result
        return _FALSE
    assert leaf.value is not None
    test, threshold = OPERATORS[leaf.op], leaf.value
    name = leaf.metric
    if name is not None and (leaf.agg == "last" or leaf.over is None) and "*" not in name:
        # The commonest leaf, a device's latest value, without a call per device.
        for device in devices:
            track = device.metrics.get(name)
            if track is not None and test(track.last, threshold):
                return (True, {name: track.last}, device.info.id)
        return _FALSE
    for device in devices:
        found = _device_value(leaf, device, ctx.now)
        if found is not None and test(found[1], threshold):
            name, value = found
            evidence = {name: value}
            if leaf.cohb is not None:
                dose = device.doses[dose_key(leaf)]
                evidence[leaf.cohb] = dose.ppm
            return (True, evidence, device.info.id)
    return _FALSE
