"""What the engine remembers about each device, and how one condition reads it.

State is plain msgspec Structs (times are seconds since the epoch, the gateway's clock), so the
engine can snapshot it to bytes and the edge can keep it in SQLite.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from itertools import accumulate

import msgspec

from rules.co_dose import Dose
from rules.durations import seconds
from rules.language import UNITLESS, Condition, RoutineTimes, parse_clock, parse_hours
from rules.routine import Routine, UpBy
from wire.metrics import metric
from wire.replay import DeviceInfo

# Metrics that rest at one value for days when all is well: "stuck: '*'" leaves them out.
RESTING = {"battery_pct", "parcel_age_h", "co_ppm", "gas_lel", "smoke_obs", "water_level_cm"}
AWAY_GRACE_S = 120.0  # presence this soon after the door opened was the leaving itself
UP_BY_MARGIN = "1h"  # "not up by": the default time allowed after the usual wake time


class MetricTrack(msgspec.Struct):
    last: float
    at: float
    history: list[tuple[float, float]] = []  # (at, value), as far back as some rule needs
    # Running totals of the history's values (sums[i]: every value up to history[i]), kept
    # for metrics that a sum or mean over a window reads: O(1) a reading, not O(window).
    sums: list[float] = []
    steady_since: float = 0.0  # the value has stayed within tolerance of ``anchor`` since
    anchor: float = 0.0
    nonzero_at: float | None = None  # the last time the value was not 0 (flags, doors)


class DeviceTrack(msgspec.Struct):
    info: DeviceInfo
    first_at: float
    last_at: float | None = None
    skew_s: float = 0.0  # device clock minus gateway clock, at the last reading
    metrics: dict[str, MetricTrack] = {}
    doses: dict[str, Dose] = {}
    scores: dict[str, float] = {}

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

    def trim(
        self,
        name: str,
        window: float,
        tolerance: float,
        summed: bool = False,
        spacing: float = 0.0,
    ) -> None:
        """Keep the history a rule needs (with its running totals where ``summed``; samples at
        least ``spacing`` apart, where only rates read it) and follow how long the value has
        been steady."""
        track = self.metrics[name]
        if window > 0:
            history, sums = track.history, track.sums
            if summed and len(sums) != len(history):  # a snapshot from before sums, a new rule
                sums[:] = accumulate(value for _, value in history)
            # A rate reads the latest value and one sample a window older, so a sample that
            # close to the last one kept adds nothing a rate needs (see RATE_SPACING).
            if not (spacing and history and track.at - history[-1][0] < spacing):
                history.append((track.at, track.last))
                if summed:
                    sums.append((sums[-1] if sums else 0.0) + track.last)
            if sums and not summed:
                sums.clear()
            # Keep the newest sample at or before the window's start (a rate needs one that
            # old) and everything after it. Bisect, not a pop(0) loop: a chatty device's
            # history is long, and this runs on every reading.
            drop = bisect_right(history, (track.at - window, _LAST)) - 1
            if drop > 0:
                del history[:drop]
                if summed:
                    del sums[:drop]
        if abs(track.last - track.anchor) > tolerance:
            track.anchor, track.steady_since = track.last, track.at


# A metric that only rates read keeps one sample per this fraction of its shortest rate window
# (0.6 s for a 60 s rate): a rate then spans at most 1 % more than its window. Devices that
# report every second or slower keep every sample; one sending 30 a second (the benchmark's)
# kept 1,800 for a 60 s rate, and the state saves and the memory grew with them.
RATE_SPACING = 0.01


# Bisecting (at, value) samples at (t, _LAST) finds the first sample after t, as a key on
# ``at`` would, without a Python call per step (this runs several times a reading).
_LAST = math.inf


def dose_key(leaf: Condition) -> str:
    return f"{leaf.cohb}:{leaf.work:g}:{leaf.cohb0:g}"


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
    history = track.history
    start = bisect_right(history, (now - seconds(leaf.over), _LAST))
    count = len(history) - start
    if leaf.agg == "count":
        return float(count)
    if leaf.agg in ("sum", "mean"):
        total = _window_sum(track, start)
        if leaf.agg == "sum":
            return total
        return total / count if count else None
    values = [v for _, v in history[start:]]
    if not values:
        return None
    return min(values) if leaf.agg == "min" else max(values)


def _window_sum(track: MetricTrack, start: int) -> float:
    """The sum of the history's values from ``start`` on."""
    history, sums = track.history, track.sums
    if start >= len(history):
        return 0.0
    if len(sums) != len(history):  # not kept for this metric (the engine keeps it: a test)
        return sum(v for _, v in history[start:])
    # Running totals subtract exactly where it matters: a window of zeros sums to 0.0.
    return sums[-1] - sums[start] + history[start][1]


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
        names = [leaf.out_of_range] if leaf.out_of_range != "*" else list(device.metrics)
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
    routine = ctx.routines.get(routine_key(ctx.scope_key, leaf))
    since = routine.last_activity if routine and routine.last_activity is not None else None
    if since is None:
        # Only a scope with a sensor for these metrics can be inactive (a bed mat in the
        # resident's scope says nothing about motion).
        names = leaf.inactive or []
        if not any(name in d.metrics for d in devices for name in names):
            return _FALSE
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
