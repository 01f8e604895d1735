"""The rule language: what people write, validated strictly (unknown keys, wrong units and
impossible thresholds are errors with file and line, see rules/config.py).

A rule is in ThingsBoard's alarm shape: a ``create`` level per CAP severity, each a condition
optionally held ``for`` a duration or repeated ``repeat`` times ``within`` a window, and a
separate ``clear`` condition, so that alerts do not flap. docs/rules.md teaches it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from rules.durations import Duration, seconds, window
from wire.metrics import METRICS, metric

RuleId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Name = Annotated[str, Meta(min_length=1, max_length=64)]
SeverityName = Literal["Extreme", "Severe", "Moderate", "Minor"]
Op = Literal[">", ">=", "<", "<=", "==", "!="]
Scope = Literal["device", "unit", "building", "resident"]
Agg = Literal["last", "mean", "min", "max", "sum", "count"]

SEVERITY_RANK: dict[str, int] = {"Minor": 1, "Moderate": 2, "Severe": 3, "Extreme": 4}
COHB_UNIT = "%COHb"
# Units a count or a flag needs no label for: "sos == 1" reads well without "unit: bool".
UNITLESS = {"bool", "count"}
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# A local time of day, "06:30". (An int only to say what went wrong: YAML 1.1 reads an
# unquoted 10:30 as the number 630.)
ClockTime = Annotated[str, Meta(pattern=_CLOCK.pattern)] | int
MAX_MARGIN_S = 12 * 3600.0  # "not up by": a margin longer than this is not a morning check
_SUBJECTS = (
    "metric",
    "rate",
    "cohb",
    "score",
    "stuck",
    "out_of_range",
    "silent",
    "silent_intervals",
    "clock_skew",
    "hours",
    "inactive",
    "away",
)
_COMPARED = {"metric", "rate", "cohb", "score"}


def _known(name: str) -> None:
    if metric(name.replace("*", "1")) is None:
        known = ", ".join(sorted(METRICS))
        raise ValueError(f"unknown metric {name!r}; the registry (wire/metrics.py) has: {known}")


class Condition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One test, or a group: ``all`` / ``any`` of conditions. Exactly one subject per leaf."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    # Subjects (exactly one):
    # a metric's value (``agg`` over ``over``; default the last); door_*_open: any door's
    metric: Name | None = None
    rate: Name | None = None  # a metric's change per minute (or per second) over ``over``
    cohb: Name | None = None  # carboxyhaemoglobin (%) modelled from this CO metric (CFK)
    score: Name | None = None  # a detector's anomaly score, 0..1 (rules/detectors.py)
    stuck: Name | None = None  # a metric ("*": any analogue one) unchanged for ``over``
    out_of_range: Name | None = None  # a metric ("*": any) outside its physical range
    silent: Duration | None = None  # no reading from the device for this long
    silent_intervals: Annotated[float, Meta(gt=1, le=1000)] | None = None  # ... N intervals
    clock_skew: Duration | None = None  # device clock differs from the gateway's by more
    hours: Annotated[str, Meta(pattern=_HOURS.pattern)] | None = None  # local "22:00-06:00"
    inactive: list[Name] | None = None  # no activity on these metrics for longer than usual
    away: Name | None = None  # left by this door metric, no presence since, for ``over``
    # Comparison:
    op: Op | None = None
    value: float | None = None
    unit: str | None = None
    # Modifiers:
    agg: Agg = "last"
    over: Duration | None = None
    # True if it held at any time in this window (latched); on a leaf or on a group.
    within: Duration | None = None
    tolerance: Annotated[float, Meta(ge=0)] = 0.0  # stuck: changes this small do not count
    # away: the metrics that say someone is at home
    presence: list[Name] = msgspec.field(default_factory=lambda: ["motion"])
    default: Duration = "12h"  # inactive: the window until the routine is learned
    # inactive, "not up by": no activity since the usual local wake time by ``margin`` after
    # it (the rule set's ``routines`` give a resident's or flat's own times)
    wake: ClockTime | None = None
    weekend_wake: ClockTime | None = None  # Saturdays and Sundays (default: ``wake``)
    margin: Duration | None = None  # default 1h
    work: Annotated[float, Meta(gt=0.001, le=1.0)] = 0.0404  # cohb: CFK's B (heavy work)
    cohb0: Annotated[float, Meta(ge=0, le=20)] = 0.5  # cohb: starting COHb (%)

    def __post_init__(self) -> None:
        groups = [g for g in (self.all, self.any) if g is not None]
        subjects = [name for name in _SUBJECTS if getattr(self, name) is not None]
        if len(groups) + len(subjects) != 1:
            found = (["all"] if self.all is not None else []) + (
                ["any"] if self.any is not None else []
            )
            raise ValueError(
                "a condition needs exactly one of all, any, "
                + ", ".join(_SUBJECTS)
                + f" (found: {', '.join(found + subjects) or 'none'})"
            )
        if groups and not groups[0]:
            raise ValueError("an all/any group needs at least one condition")
        for name in ("over", "within", "silent", "clock_skew", "default", "margin"):
            value = getattr(self, name)
            if value is not None:
                seconds(value)  # strings past ten years are errors too (the pattern is open)
        if self.within is not None:
            window(self.within, "within")
        if subjects:
            self._check_leaf(subjects[0])

    @property
    def subject(self) -> str:
        return next((n for n in _SUBJECTS if getattr(self, n) is not None), "group")

    def _check_leaf(self, subject: str) -> None:
        compared = subject in _COMPARED
        if compared and (self.op is None or self.value is None):
            raise ValueError(f"a {subject} condition needs op and value")
        if not compared and (self.op is not None or self.value is not None):
            raise ValueError(f"a {subject} condition takes no op/value")
        if not math.isfinite(self.tolerance):  # .inf: every value "unchanged", stuck at once
            raise ValueError(f"tolerance must be a finite number, not {self.tolerance}")
        if self.value is not None and not math.isfinite(self.value):
            # NaN compares false with everything: a rule that could never hold, unsaid.
            raise ValueError(f"value must be a finite number, not {self.value}")
        if subject == "metric":
            self._check_metric()
        elif subject == "rate":
            self._check_rate()
        elif subject == "cohb":
            assert self.cohb is not None and self.value is not None
            _known(self.cohb)
            if self.unit != COHB_UNIT:
                raise ValueError(f"a cohb condition is in {COHB_UNIT!r}, write unit: {COHB_UNIT}")
            if not 0 < self.value < 100:
                raise ValueError(f"impossible COHb threshold {self.value} (0-100 %)")
        elif subject == "score":
            assert self.value is not None
            if not 0 <= self.value <= 1:
                raise ValueError(f"a detector score is 0..1; {self.value} is never reached")
        elif subject in ("stuck", "away"):
            name = self.stuck if subject == "stuck" else self.away
            assert name is not None
            if name != "*":
                _known(name)
            if self.over is None:
                raise ValueError(f"a {subject} condition needs over: a duration")
            window(self.over, f"a {subject} condition's over")
        elif subject in ("silent", "clock_skew"):
            window(getattr(self, subject), subject)
        elif subject == "out_of_range":
            assert self.out_of_range is not None
            if self.out_of_range != "*":
                _known(self.out_of_range)
        elif subject == "inactive":
            assert self.inactive is not None
            if not self.inactive:
                raise ValueError("inactive needs at least one activity metric")
            for name in self.inactive:
                _known(name)
            window(self.default, "default")
            self._check_wake()
        if subject != "inactive":
            for name in ("wake", "weekend_wake", "margin"):
                if getattr(self, name) is not None:
                    raise ValueError(f'{name} goes with inactive (the "not up by" check)')
        for name in self.presence:
            _known(name)

    def _check_wake(self) -> None:
        check_clock("wake", self.wake)
        check_clock("weekend_wake", self.weekend_wake)
        if self.wake is None:
            for name in ("weekend_wake", "margin"):
                if getattr(self, name) is not None:
                    raise ValueError(f'{name} needs wake: the usual wake time, e.g. wake: "06:30"')
            return
        if self.margin is not None:
            check_margin(seconds(self.margin))

    def _check_metric(self) -> None:
        assert self.metric is not None and self.value is not None and self.op is not None
        _known(self.metric)
        if "*" in self.metric and not re.fullmatch(r"door_\*_[a-z_]+", self.metric):
            raise ValueError(f"a wildcard metric names every door: door_*_open, not {self.metric}")
        if "*" in self.metric and self.agg != "last":
            raise ValueError(f"{self.metric}: a wildcard metric takes no agg")
        found = metric(self.metric.replace("*", "1"))
        assert found is not None
        if self.agg != "last" and self.over is None:
            raise ValueError(f"agg {self.agg} needs over: a window")
        if self.over is not None:
            window(self.over, "over")
        if self.agg == "count":
            return
        if self.unit is None and found.unit not in UNITLESS:
            raise ValueError(f"say the unit: {self.metric} is in {found.unit!r}")
        if self.unit is not None and self.unit != found.unit:
            raise ValueError(f"wrong unit {self.unit!r}: {self.metric} is in {found.unit!r}")
        if self.agg == "sum":
            return
        low, high, v = found.low, found.high, self.value
        never = (
            (self.op in (">", ">=") and (v > high or (v == high and self.op == ">")))
            or (self.op in ("<", "<=") and (v < low or (v == low and self.op == "<")))
            or (self.op == "==" and not low <= v <= high)
        )
        always = (self.op == ">=" and v <= low) or (self.op == "<=" and v >= high)
        if never or always:
            what = "never" if never else "always"
            raise ValueError(
                f"impossible threshold: {self.metric} {self.op} {v} is {what} true "
                f"(physical range {low:g}..{high:g} {found.unit})"
            )

    def _check_rate(self) -> None:
        assert self.rate is not None and self.value is not None
        _known(self.rate)
        found = metric(self.rate)
        assert found is not None
        if self.over is None:
            raise ValueError("a rate condition needs over: a window such as 60s")
        window(self.over, "a rate's over")
        if self.unit not in (f"{found.unit}/min", f"{found.unit}/s"):
            raise ValueError(
                f"wrong unit {self.unit!r}: the rate of {self.rate} is in "
                f"'{found.unit}/min' or '{found.unit}/s'"
            )
        per_minute = self.value * (60 if self.unit.endswith("/s") else 1)
        span = found.high - found.low
        if abs(per_minute) * seconds(self.over) / 60 > span:
            raise ValueError(
                f"impossible rate: {self.value} {self.unit} over {self.over} is more than the "
                f"whole range of {self.rate} ({span:g} {found.unit})"
            )

    def leaves(self) -> list[Condition]:
        if self.all is not None or self.any is not None:
            return [leaf for child in (self.all or self.any or []) for leaf in child.leaves()]
        return [self]

    def latches(self) -> bool:
        """Whether it, or any condition in it, latches (``within``)."""
        children = self.all if self.all is not None else self.any
        return self.within is not None or any(child.latches() for child in children or [])


class Level(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A create (or clear) condition: ``all`` or ``any`` of conditions, held or repeated."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    for_: Duration = msgspec.field(default=0.0, name="for")
    repeat: Annotated[int, Meta(ge=1, le=10000)] | None = None
    within: Duration | None = None

    def __post_init__(self) -> None:
        if self.all is not None and self.any is not None:
            raise ValueError("a level takes all or any, not both (nest one in the other)")
        if (self.all is not None or self.any is not None) and not (self.all or self.any):
            raise ValueError("an all/any group needs at least one condition")
        if (self.repeat is None) != (self.within is None):
            raise ValueError("repeat and within go together: repeat N times within a window")
        seconds(self.for_)  # past ten years: an error
        if self.within is not None:
            window(self.within, "within")
        if self.repeat is not None and seconds(self.for_) > 0:
            raise ValueError("a level is either held (for) or repeated (repeat/within), not both")

    @property
    def condition(self) -> Condition | None:
        """None for a bare clear level (``clear: {for: 5min}``): no create condition holds."""
        if self.all is None and self.any is None:
            return None
        return Condition(all=self.all, any=self.any)


class Match(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which devices a rule reads: by kind and by room (empty: all), less excluded kinds."""

    kinds: list[Name] = []
    rooms: list[Name] = []
    not_kinds: list[Name] = []


ActionName = Literal["siren", "valve_close", "speaker", "notify", "broadcast"]


class Action(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to do when the alert is raised or escalates (from severity ``at`` up)."""

    do: ActionName
    at: SeverityName | None = None
    to: list[Name] = []  # notify: audiences such as family, committee, staff
    text: Annotated[str, Meta(max_length=256)] = ""  # speaker / broadcast text


class Create(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A create level per CAP severity (a Struct, not a dict, so errors name their line)."""

    Extreme: Level | None = None
    Severe: Level | None = None
    Moderate: Level | None = None
    Minor: Level | None = None

    def items(self) -> list[tuple[str, Level]]:
        """(severity, level) for each level given, most severe first."""
        levels = (
            ("Extreme", self.Extreme),
            ("Severe", self.Severe),
            ("Moderate", self.Moderate),
            ("Minor", self.Minor),
        )
        return [(name, level) for name, level in levels if level is not None]

    def values(self) -> list[Level]:
        return [level for _, level in self.items()]

    def __bool__(self) -> bool:
        return bool(self.items())


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: RuleId
    kind: Name
    description: Annotated[str, Meta(max_length=512)] = ""
    life_safety: bool = False
    scope: Scope = "device"
    devices: Match = Match()
    create: Create
    clear: Level | None = None
    actions: list[Action] = []
    message: Annotated[str, Meta(max_length=256)] = ""

    def __post_init__(self) -> None:
        if not self.create:
            raise ValueError(f"rule {self.id!r}: create needs at least one severity level")
        for severity, level in self.create.items():
            if level.condition is None:
                raise ValueError(f"rule {self.id!r}: create {severity} needs all or any")
        if self.clear is not None and self.clear.repeat is not None:
            raise ValueError(f"rule {self.id!r}: a clear condition is held (for), not repeated")
        for level in [*self.create.values(), *([self.clear] if self.clear else [])]:
            cond = level.condition
            for leaf in cond.leaves() if cond is not None else []:
                if leaf.subject in ("inactive", "away") and self.scope == "device":
                    raise ValueError(
                        f"rule {self.id!r}: {leaf.subject} reads several devices; "
                        "use scope: unit or resident"
                    )

    def levels(self) -> list[tuple[str, Level]]:
        """Create levels, most severe first."""
        return self.create.items()

    def fingerprint(self) -> bytes:
        """Identical for an unchanged rule: reload keeps its state."""
        return msgspec.json.encode(self)


def check_clock(name: str, value: str | int | None) -> None:
    if isinstance(value, int):
        hours, minutes = divmod(value, 60)
        raise ValueError(
            f'{name}: write the time in quotes, {name}: "{hours:02d}:{minutes:02d}" '
            f"(YAML reads {hours}:{minutes:02d} unquoted as the number {value})"
        )


def check_margin(margin_s: float) -> None:
    if not 0 < margin_s <= MAX_MARGIN_S:
        raise ValueError(
            f"margin {margin_s / 60:g} min: the time allowed after the usual wake time is "
            "more than 0 and at most 12h"
        )


_RESIDENT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_FLAT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RoutineTimes(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A resident's (or a flat's) own usual times, for the "not up by" check of ``inactive``
    conditions that have a ``wake`` time: these replace the rule's."""

    resident: Annotated[str, Meta(pattern=_RESIDENT)] | None = None
    flat: Annotated[str, Meta(pattern=_FLAT)] | None = None  # "building/unit"
    wake: ClockTime
    weekend_wake: ClockTime | None = None  # default: ``wake``
    margin: Duration | None = None  # default: the rule's

    def __post_init__(self) -> None:
        if (self.resident is None) == (self.flat is None):
            raise ValueError("a routine names one resident or one flat (building/unit)")
        check_clock("wake", self.wake)
        check_clock("weekend_wake", self.weekend_wake)
        if self.margin is not None:
            check_margin(seconds(self.margin))

    @property
    def key(self) -> str:
        """The scope key it applies to: the resident's id or the flat's "building/unit"."""
        found = self.resident or self.flat
        assert found is not None
        return found


def parse_clock(text: str | int) -> int:
    """``"06:30"`` -> minutes after local midnight."""
    match = _CLOCK.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a time of day: {text!r} (write e.g. 06:30)")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_hours(text: str) -> tuple[int, int]:
    """``"22:00-06:00"`` -> minutes of the day (start, end); end may be before start."""
    match = _HOURS.match(text)
    if match is None:
        raise ValueError(f"not hours: {text!r} (write e.g. 22:00-06:00)")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return h1 * 60 + m1, h2 * 60 + m2
