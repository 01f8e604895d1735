"""The rule engine: readings and time in, alert transitions out. Pure: no I/O, no clock.

    engine = Engine(ruleset)
    engine.feed(device_info, reading, now)  # -> [Transition, ...]
    engine.tick(now)                        # timers: holds, clears, silence, routines
    engine.reload(new_ruleset)              # unchanged rules keep their state
    data = engine.snapshot(); Engine.restore(ruleset, data)

Each rule runs once per scope (a device, a unit, a building or a resident). An alert is raised
at the most severe create level whose condition has held ``for`` its time (or was met
``repeat`` times ``within`` its window), escalates but never de-escalates, and clears only when
no create condition holds and the clear condition has held for its time.
"""

from __future__ import annotations

import logging
import math
import operator
import pickle
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from rules.co_dose import Dose
from rules.detectors import DETECTORS, TIME_KEY, Detector, DetectorFactory
from rules.durations import seconds
from rules.language import SEVERITY_RANK, Action, Condition, Level, RoutineTimes, Rule, parse_clock
from rules.routine import Routine
from rules.ruleset import RuleSet, utc_offset_seconds
from rules.signals import (
    BUCKET_FRACTION,
    OPERATORS,
    RATE_SPACING,
    Context,
    DeviceTrack,
    Evidence,
    dose_key,
    dose_may_reach,
    evaluate_leaf,
    routine_key,
    silence_limit,
    up_by,
)
from rules.transition import Transition
from wire.metrics import metric
from wire.models import Phase, Reading, Severity
from wire.replay import DeviceInfo

SNAPSHOT_VERSION = 1
_ENCODER = msgspec.msgpack.Encoder()
_SEP = "\t"  # between device id and detector name in a snapshot's model keys
MODELS_EVERY_S = 300.0  # engine time between two picklings of the detector models
# A time this much before the latest one fed or ticked is the clock set back (_clock_set_back);
# less is the usual order of a batch's readings and the ticks between them.
CLOCK_STEP_S = 1.0
MAX_EVIDENCE = 32  # wire.models.Values allows this many entries


class EngineError(Exception):
    """The engine cannot run these rules (e.g. a score names no registered detector)."""


class AlertTrack(msgspec.Struct):
    """One rule in one scope: its alert (if raised) and the timers leading to a change."""

    severity: str | None = None
    raised_at: float | None = None
    device: str | None = None
    since: dict[str, float] = {}  # create level -> its condition has held since
    hits: dict[str, list[float]] = {}  # create level -> times it was met (repeat levels)
    clear_since: float | None = None
    latches: dict[str, float] = {}  # condition path -> the last time it held ("within")

    def idle(self) -> bool:
        return (
            self.severity is None
            and not self.since
            and not self.hits
            and self.clear_since is None
            and not self.latches
        )


class EngineState(msgspec.Struct):
    v: int = SNAPSHOT_VERSION
    devices: dict[str, DeviceTrack] = {}
    alerts: dict[str, dict[str, AlertTrack]] = {}  # rule id -> scope key -> track
    fingerprints: dict[str, str] = {}  # rule id -> its definition, to spot edits
    routines: dict[str, Routine] = {}
    # Only in snapshots: "device<TAB>detector" -> the pickled model (see Engine.snapshot).
    detectors: dict[str, bytes] = {}


@dataclass(slots=True)
class _Compiled:
    rule: Rule
    levels: list[tuple[str, Level, Condition, float]]
    clear: tuple[Condition | None, float] | None
    leaves: list[Condition]
    clocked: bool  # some condition can change with time alone
    reads: frozenset[str]  # the metrics its conditions read ("door_*_x" patterns included)
    every_reading: bool  # some condition is about the reading itself (silence, skew, range)
    patterns: tuple[str, ...] = ()  # the metrics it reads by pattern ("door_*_x")
    detectors: set[str] = field(default_factory=set)
    inactive: list[Condition] = field(default_factory=list)
    # Set when every leaf is a test of a device's latest reading (clock skew, out of range)
    # in a device scope, with no repeat or latch: such a rule reaches every reading, which
    # passes its gate (_step), although ``every_reading`` holds for it.
    reading_faults: list[Condition] | None = None
    # The same for silence leaves: while nothing is raised or running, a tick that finds the
    # device not yet silent long enough cannot change the rule (device-silent: every device,
    # every second; its full evaluation was ~2.4 ms of the loop a second at 1,000 devices).
    silences: list[Condition] | None = None
    # The create levels' leaves, for the gate on readings (see ``_Gate``), and those of them
    # whose truth can change with time alone (a window's aggregate, a silence, a dose).
    creates: list[Condition] = field(default_factory=list)
    timed: list[Condition] = field(default_factory=list)
    # Every timed leaf is a COHb dose at or over a threshold: see signals.dose_may_reach.
    doses_only: bool = False


log = logging.getLogger(__name__)

PLANS_LIMIT = 100_000
# (rates back to, their spacing, windows back to, bucket width, every window's length): see
# DeviceTrack.trim. A metric no window reads: its latest value is enough.
_Keep = tuple[float, float, float, float, tuple[float, ...]]
_KEEP_NOTHING: _Keep = (0.0, 0.0, 0.0, 0.0, ())
# One rule's part in a reading (see _step): how it is met, the rule, its scope key, rule id,
# (rule id, scope key), its gate, and its ``inactive`` leaves on the reading's metrics.
_Scored = tuple[str, str, list[str]]  # rule id, scope key, the detectors it reads
_Step = tuple[int, "_Compiled", str, str, tuple[str, str], "_Gate | None", tuple[Condition, ...]]
_CLOCKED = {"silent", "silent_intervals", "hours", "inactive", "away", "cohb"}
# A reading can only end a silence, never start one: a silence rule that is idle in a scope
# (nothing raised, no timer running) is left to the clock's tick, not judged on every reading.
_EVERY_READING = {"clock_skew", "hours"}


_READING_FAULTS = {"clock_skew", "out_of_range"}
_SILENCES = {"silent", "silent_intervals"}


def _device_leaves(rule: Rule, leaves: list[Condition], kinds: set[str]) -> list[Condition] | None:
    """``leaves`` when the rule is device-scoped, every leaf is of these ``kinds`` (and
    latches nothing) and no level counts repeats: then the rule can only change, while idle,
    when one of the leaves holds on its device."""
    if rule.scope != "device" or any(level.repeat is not None for _, level in rule.levels()):
        return None
    if any(level.condition is not None and level.condition.latches() for _, level in rule.levels()):
        return None
    if all(leaf.subject in kinds for leaf in leaves):
        return leaves
    return None


def _compile(rule: Rule) -> _Compiled:
    levels = []
    for severity, level in rule.levels():
        cond = level.condition
        assert cond is not None  # Rule checks that every create level has one
        levels.append((severity, level, cond, seconds(level.for_)))
    clear = None
    if rule.clear is not None:
        clear = (rule.clear.condition, seconds(rule.clear.for_))
    creates = [leaf for _, _, cond, _ in levels for leaf in cond.leaves()]
    leaves = list(creates)
    if clear is not None and clear[0] is not None:
        leaves += clear[0].leaves()
    reads = {name for leaf in leaves for name in _leaf_reads(leaf)}
    return _Compiled(
        rule=rule,
        levels=levels,
        clear=clear,
        leaves=leaves,
        clocked=any(leaf.subject in _CLOCKED for leaf in leaves)
        or any(_turns_true_with_time(leaf) for leaf in creates),
        reads=frozenset(reads),
        # A repeat counts readings that meet the level: each one must be judged, even for a
        # level (a silence) that no single reading's metrics could make true.
        every_reading="*" in reads
        or any(leaf.subject in _EVERY_READING for leaf in leaves)
        or any(level.repeat is not None for _, level, _, _ in levels),
        patterns=tuple(sorted(name for name in reads if "*" in name)),
        detectors={leaf.score for leaf in leaves if leaf.score is not None},
        inactive=[leaf for leaf in leaves if leaf.inactive is not None],
        reading_faults=_device_leaves(rule, leaves, _READING_FAULTS),
        silences=_device_leaves(rule, leaves, _SILENCES),
        creates=creates,
        timed=[leaf for leaf in creates if _timed(leaf)],
        doses_only=any(_timed(leaf) for leaf in creates)
        and all(
            leaf.cohb is not None and leaf.op in (">", ">=") for leaf in creates if _timed(leaf)
        ),
    )


def _leaf_reads(leaf: Condition) -> set[str]:
    """The metrics a leaf reads (``door_*_x`` patterns as written)."""
    names = {
        name
        for name in (leaf.metric, leaf.rate, leaf.cohb, leaf.stuck, leaf.away, leaf.out_of_range)
        if name is not None
    }
    if leaf.away is not None:
        names.update(leaf.presence)
    names.update(leaf.inactive or [])
    return names


def _timed(leaf: Condition) -> bool:
    """Whether the leaf's truth can change with time alone, with no new reading."""
    windowed = leaf.metric is not None and leaf.agg != "last" and leaf.over is not None
    return windowed or leaf.subject in _CLOCKED


def _turns_true_with_time(leaf: Condition) -> bool:
    """Whether samples leaving a window can turn a window's aggregate true with no reading
    (a mean rises when low samples leave; a count under N, when any leave). A maximum or a
    count over N only falls, a minimum under N only rises, a sum of non-negatives only falls:
    those leave idle rules to readings."""
    if leaf.metric is None or leaf.agg == "last" or leaf.over is None or leaf.op is None:
        return False
    above = leaf.op in (">", ">=")
    if leaf.agg in ("max", "count") and above:
        return False
    if leaf.agg == "min" and leaf.op in ("<", "<="):
        return False
    found = metric(leaf.metric.replace("*", "1"))
    return not (leaf.agg == "sum" and above and found is not None and found.low >= 0)


class _Gate:
    """Whether a reading can change a rule whose track in the scope is idle (nothing raised,
    no hold, latch or clear running) and was judged since the rules or the scope's devices
    last changed.

    Conditions have no negation, so a level that was false when last judged can only turn
    true if one of its leaves has turned true on some device since. A leaf on a device
    changes only with that device's readings of the leaf's metrics (a clock skew: with any
    reading), or with time. Each such reading passed this gate, which judged the rule in
    full whenever the leaf held on the device; so it is enough to test the leaves on the
    reading's metrics, on its device alone, and the timed leaves on the whole scope. Most
    readings (a normal gas or smoke value) pass no test, and the rule's full evaluation
    (every level and group, its context and track) is spared. A reading that passes is
    still spared when no level can hold with its latest-value leaves as they stand
    (``may_hold``: ``hr > 0`` holds, but not beside ``hr < 40``)."""

    __slots__ = (
        "bounded",
        "bounds",
        "latest",
        "others",
        "ranges",
        "rates",
        "scores",
        "skews",
        "stuck",
        "timed",
    )

    def __init__(self, compiled: _Compiled, names: Sequence[str]) -> None:
        # A clock skew changes with any reading of the device; a detector's score, with any
        # reading of the device it scores (its detectors score every reading, see _score).
        touched = [
            leaf
            for leaf in compiled.creates
            if not _timed(leaf)
            and (
                leaf.clock_skew is not None
                or leaf.score is not None
                or any(fnmatchcase(name, read) for read in _leaf_reads(leaf) for name in names)
            )
        ]
        # The common leaves as plain data, tested without a call: a device's latest value
        # (metric, test, threshold); a fed metric's physical range (name, low, high); a
        # clock skew limit; a stuck metric (name, seconds); a rate (name, leaf, test, threshold).
        self.latest: list[tuple[str, Callable[[float, float], bool], float]] = []
        # (name, window s, 1 per second or 60 per minute, test, threshold): rate_of as data
        self.rates: list[tuple[str, float, float, Callable[[float, float], bool], float]] = []
        self.ranges: list[tuple[str, float, float]] = []
        self.skews: list[float] = []
        self.stuck: list[tuple[str, float]] = []
        self.scores: list[tuple[str, Callable[[float, float], bool], float]] = []
        self.others: list[Condition] = []
        for leaf in touched:
            if (
                leaf.metric is not None
                and "*" not in leaf.metric
                and leaf.op is not None
                and leaf.value is not None
            ):
                self.latest.append((leaf.metric, OPERATORS[leaf.op], leaf.value))
            elif leaf.out_of_range is not None:
                for name in names:
                    found = metric(name)
                    if found is not None and fnmatchcase(name, leaf.out_of_range):
                        self.ranges.append((name, found.low, found.high))
            elif leaf.clock_skew is not None:
                self.skews.append(seconds(leaf.clock_skew))
            elif leaf.rate is not None and leaf.op is not None and leaf.value is not None:
                assert leaf.over is not None and leaf.unit is not None
                factor = 1.0 if leaf.unit.endswith("/s") else 60.0
                test = OPERATORS[leaf.op]
                self.rates.append((leaf.rate, seconds(leaf.over), factor, test, leaf.value))
            elif leaf.stuck is not None and leaf.stuck != "*" and leaf.over is not None:
                self.stuck.append((leaf.stuck, seconds(leaf.over)))
            elif leaf.score is not None and leaf.op is not None and leaf.value is not None:
                self.scores.append((leaf.score, OPERATORS[leaf.op], leaf.value))
            else:
                self.others.append(leaf)
        self.timed = compiled.timed
        self.bounds = _bounds(compiled)
        self.bounded: tuple[_Bounded, ...] = ()  # a merged gate's (see merged)

    def holds(self, device: DeviceTrack) -> bool:
        """Whether one of the plain leaves holds on the device (``others`` and ``timed`` are
        the engine's to test, with a context)."""
        metrics = device.metrics
        for name, test, threshold in self.latest:
            track = metrics.get(name)
            if track is not None and test(track.last, threshold):
                return True
        faulted = device.faulted
        for name, low, high in self.ranges:
            if name in faulted:
                return True
            track = metrics.get(name)
            if track is not None and not low <= track.last <= high:
                return True
        for limit in self.skews:
            if device.last_at is not None and abs(device.skew_s) >= limit:
                return True
        for name, over in self.stuck:
            track = metrics.get(name)
            if track is not None and track.at - track.steady_since >= over:
                return True
        for name, over, factor, test, threshold in self.rates:
            track = metrics.get(name)
            if track is None:
                continue
            # rate_of, without its call: the newest sample at least ``over`` old
            history = track.history
            older = bisect_right(history, (track.at - over, math.inf))
            if older:
                t0, v0 = history[older - 1]
                if test((track.last - v0) / (track.at - t0) * factor, threshold):
                    return True
        scores = device.scores
        for name, test, threshold in self.scores:
            score = scores.get(name)
            if score is not None and test(score, threshold):
                return True
        if not self.bounded:  # a rule's own gate, or a merged one with no bounds to test
            return False
        return any(part.may_hold(scope) and part.holds(device) for part, scope in self.bounded)

    def may_hold(self, devices: Sequence[DeviceTrack]) -> bool:
        """Whether a create level can hold now, its latest-value leaves tested on the scope and
        every other leaf taken as true: a leaf that holds (``hr > 0``) beside one that does not
        (``hr < 40``) in an ``all`` cannot make the rule true."""
        if self.bounds is None:
            return True
        for clause in self.bounds:
            for name, test, threshold in clause:
                for device in devices:
                    track = device.metrics.get(name)
                    if track is not None and test(track.last, threshold):
                        break
                else:
                    break  # this leaf holds on no device: the clause fails
            else:
                return True
        return False

    @classmethod
    def merged(cls, gates: Sequence[_Gate], bounded: Sequence[_Bounded] = ()) -> _Gate:
        """One gate that holds when any of ``gates`` holds (their plain leaves only: the
        caller takes none with ``others`` or ``timed``), or one of ``bounded`` both holds on
        the device and may hold on its scope: a rule a reading would pass its gate and then
        be spared by ``may_hold`` (a wearable's ``0 < hr < 40``: ``hr > 0`` holds on every
        normal reading, and took each one the long way past every rule)."""
        gate = cls.__new__(cls)
        for name in ("latest", "ranges", "stuck", "rates", "scores"):
            found: list[Any] = []
            for part in gates:
                for leaf in getattr(part, name):
                    if leaf not in found:
                        found.append(leaf)
            setattr(gate, name, found)
        # Of tests with one metric and operator, the loosest holds whenever any does.
        loosest: dict[tuple[str, Callable[[float, float], bool]], float] = {}
        latest = []
        for name, test, threshold in gate.latest:
            looser = _LOOSER.get(test)
            if looser is None:  # == and !=: each kept (thresholds are finite: rules.language)
                latest.append((name, test, threshold))
            elif (name, test) not in loosest or looser(threshold, loosest[(name, test)]):
                loosest[(name, test)] = threshold
        gate.latest = latest + [(name, test, limit) for (name, test), limit in loosest.items()]
        # Rates likewise, per metric, window, unit and operator: one computed, not several.
        rates: dict[tuple[str, float, float, Callable[[float, float], bool]], float] = {}
        kept = []
        for name, over, factor, test, threshold in gate.rates:
            looser = _LOOSER.get(test)
            if looser is None:
                kept.append((name, over, factor, test, threshold))
            elif (name, over, factor, test) not in rates or looser(
                threshold, rates[(name, over, factor, test)]
            ):
                rates[(name, over, factor, test)] = threshold
        gate.rates = kept + [(n, o, f, t, limit) for (n, o, f, t), limit in rates.items()]
        gate.bounded = tuple(bounded)
        skews = [limit for part in gates for limit in part.skews]
        gate.skews = [min(skews)] if skews else []  # |skew| >= the least limit: any holds
        gate.others, gate.timed, gate.bounds = [], [], None
        return gate


# A threshold looser than another for these tests: ``>= 10`` holds whenever ``>= 25`` does.
_LOOSER: dict[Callable[[float, float], bool], Callable[[float, float], bool]] = {
    OPERATORS[">="]: operator.lt,
    OPERATORS[">"]: operator.lt,
    OPERATORS["<="]: operator.gt,
    OPERATORS["<"]: operator.gt,
}


# A gate merged with its bounds, and its scope's devices (_Gate.merged).
_Bounded = tuple["_Gate", list[DeviceTrack]]
# The passable steps' gates, and those of them merged with their bounds (by scope).
_MergedKey = tuple[tuple["_Gate", ...], tuple[tuple["_Gate", int], ...]]


class _Plan:
    """A device's rules for readings of some metrics, a step each (_step), and a quick way
    past most of them. A step is passable when its rule is idle in its scope and its reading
    can only be let through by its gate's plain leaves (no ``others`` or ``timed`` leaf to
    test with a context, no routine to learn): ``gate`` merges those leaves, so a reading none
    of them holds for skips every passable step with one test, where the loop (``feed``) made
    each step's lookups and gate call (~24 % of a reading, measured). Whether every passable
    step is idle (and, if gated, settled) is asked again only when the engine's ``epoch`` has
    moved: any alert track opened or closed, any scope settled, since it was last asked."""

    __slots__ = ("calm", "checked", "gate", "passable", "rest", "steps")

    def __init__(
        self,
        steps: list[_Step],
        merged: dict[_MergedKey, _Gate],
        bounded: tuple[_Bounded, ...] = (),
    ) -> None:
        # Tuples where they can be: a plan per device lives as long as the rules, and the
        # collector untracks tuples of plain values (full collections pause the loop).
        self.steps = tuple(steps)
        passable = [step for step in steps if _passable(step)]
        self.rest = tuple(step for step in steps if not _passable(step))
        # (mode, rule id, scope key, (rule id, scope key)) of each passable step
        self.passable = tuple((step[0], step[3], step[2], step[4]) for step in passable)
        gates = tuple(step[5] for step in passable if step[5] is not None)
        self.gate: _Gate | None = None
        if passable:
            bounded = tuple(part for part in bounded if part[0] in gates)
            key = (gates, tuple((gate, id(scope)) for gate, scope in bounded))
            self.gate = merged.get(key)
            if self.gate is None:
                own = [gate for gate, _ in bounded]
                self.gate = merged[key] = _Gate.merged(
                    [gate for gate in gates if gate not in own], bounded
                )
        self.checked = -1  # the epoch ``calm`` was found at
        self.calm = False


def _passable(step: _Step) -> bool:
    mode, _, _, _, _, gate, routines = step
    if routines:
        return False
    if mode == _WATCHED:
        return True
    return mode == _GATED and gate is not None and not gate.others and not gate.timed


# The create levels reduced to their latest-value leaves (see _Gate.may_hold), as clauses
# any of which may hold, each a list of leaves (metric, test, threshold) that must all hold.
_Leaf = tuple[str, Callable[[float, float], bool], float]
_Clauses = list[list[_Leaf]]
_CLAUSES_LIMIT = 64  # an "all" of many "any"s multiplies out; past this, no bound


def _bounds(compiled: _Compiled) -> _Clauses | None:
    """The create levels as clauses; None when a level could hold whatever the latest
    values (a level of timed leaves alone), when they multiply out past _CLAUSES_LIMIT, or
    when a leaf latches (``within``: judging sets its latch even while its level is false, so
    the rule is judged whenever the leaf holds)."""
    if any(cond.latches() for _, _, cond, _ in compiled.levels):
        return None
    out: _Clauses = []
    for _, _, cond, _ in compiled.levels:
        clauses = _clauses(cond)
        if clauses is None:
            return None
        out += clauses
    return out


def _clauses(cond: Condition) -> _Clauses | None:
    """``cond`` as clauses; None where it is taken as true."""
    children = cond.all if cond.all is not None else cond.any
    if children is not None:
        reduced = [_clauses(child) for child in children]
        if cond.any is not None:
            if any(child is None for child in reduced):
                return None
            return [clause for child in reduced if child is not None for clause in child]
        product: _Clauses = [[]]
        for child in reduced:
            if child is None:
                continue
            product = [mine + theirs for mine in product for theirs in child]
            if len(product) > _CLAUSES_LIMIT:
                return None
        return product if product != [[]] else None
    # The leaves evaluate_leaf tests as a device's latest value.
    if (
        cond.hours is None
        and cond.inactive is None
        and cond.away is None
        and cond.op is not None
        and cond.value is not None
        and cond.metric is not None
        and "*" not in cond.metric
        and (cond.agg == "last" or cond.over is None)
    ):
        return [[(cond.metric, OPERATORS[cond.op], cond.value)]]
    return None


# Ticks judge an idle, settled rule only when a timed leaf holds (the equivalence test turns
# this off to compare with judging every clocked rule on every tick).
_GATE_TICKS = True


# How a reading meets one of its device's rules: judge it in full (it is about readings as
# such, or counts repeats), pass it through its gate, or only judge it if its track in the
# scope is not idle (the reading carries nothing it reads).
_JUDGE, _GATED, _WATCHED = 0, 1, 2


def _step(
    compiled: _Compiled, key: str, names: tuple[str, ...], gates: dict[tuple[str, ...], _Gate]
) -> _Step:
    """The rule's step for readings of ``names``; ``gates``: the rule's gates by metrics, shared
    by every device that sends them (a gate depends on the rule and the metrics only)."""
    if compiled.reading_faults is not None:
        mode = _GATED
    elif compiled.every_reading:
        mode = _JUDGE
    elif (
        compiled.detectors
        or not compiled.reads.isdisjoint(names)
        or any(fnmatchcase(name, p) for p in compiled.patterns for name in names)
    ):
        mode = _GATED
    else:
        mode = _WATCHED
    fed = set(names)
    # A tuple: most are empty, and the empty one is not the cyclic collector's to scan (a
    # list per rule and device was; see _Plan).
    routines = tuple(leaf for leaf in compiled.inactive if fed.intersection(leaf.inactive or []))
    gate = None
    if mode == _GATED:
        gate = gates.get(names)
        if gate is None:
            gate = gates[names] = _Gate(compiled, names)
    return (mode, compiled, key, compiled.rule.id, (compiled.rule.id, key), gate, routines)


def _rules_of(ruleset: RuleSet | Sequence[Rule]) -> list[Rule]:
    return ruleset.resolved() if isinstance(ruleset, RuleSet) else list(ruleset)


def _readable(cond: Condition, names: set[str]) -> bool:
    """Whether ``cond`` can be judged from metrics named ``names`` (see _can_clear): every
    child of an ``all``, some child of an ``any``; a metric or rate leaf if a name matches it
    (patterns included); any other leaf is taken as readable."""
    children = cond.all if cond.all is not None else cond.any
    if children is not None:
        judged = [_readable(child, names) for child in children]
        return all(judged) if cond.all is not None else any(judged)
    wanted = cond.metric or cond.rate
    if wanted is None:
        return True
    return any(fnmatchcase(name, wanted) for name in names)


def _routines_of(ruleset: RuleSet | Sequence[Rule]) -> dict[str, RoutineTimes]:
    return {t.key: t for t in ruleset.routines} if isinstance(ruleset, RuleSet) else {}


def _flat(device: DeviceInfo) -> str | None:
    return f"{device.building}/{device.unit}" if device.unit is not None else None


def scope_key(rule: Rule, device: DeviceInfo) -> str:
    if rule.scope == "device":
        return device.id
    if rule.scope == "building":
        return device.building
    if rule.scope == "resident" and device.resident is not None:
        return device.resident
    return f"{device.building}/{device.unit or device.id}"


def _matches(rule: Rule, device: DeviceInfo) -> bool:
    match = rule.devices
    return (
        (not match.kinds or device.kind in match.kinds)
        and (not match.rooms or device.room in match.rooms)
        and device.kind not in match.not_kinds
    )


def _actions(rule: Rule, severity: str, previous: str | None) -> tuple[Action, ...]:
    def due(action: Action, at: str | None) -> bool:
        if at is None:
            return False
        return SEVERITY_RANK[action.at or "Minor"] <= SEVERITY_RANK[at]

    return tuple(a for a in rule.actions if due(a, severity) and not due(a, previous))


def _config(detector: object) -> object:
    """A detector's configuration (``Protected`` wraps a model that has one), or None."""
    model = getattr(detector, "model", detector)
    return getattr(model, "config", None)


class _Missing(dict[str, object]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def _message(rule: Rule, severity: str, evidence: Evidence, where: Mapping[str, str]) -> str:
    if rule.message:
        try:
            return rule.message.format_map(_Missing({**where, "severity": severity, **evidence}))[
                :256
            ]
        except (KeyError, ValueError, IndexError):
            pass  # a value the template names is not in this alert's evidence
    shown = ", ".join(f"{k} {v:.3g}" for k, v in list(evidence.items())[:6])
    return f"{rule.kind} {severity} at {where.get('key', '')}: {shown}"[:256]


class Engine:
    def __init__(
        self,
        ruleset: RuleSet | Sequence[Rule],
        *,
        utc_offset_s: float | None = None,
        detectors: Mapping[str, DetectorFactory] | None = None,
    ) -> None:
        if utc_offset_s is None:
            utc_offset_s = (
                utc_offset_seconds(ruleset.utc_offset) if isinstance(ruleset, RuleSet) else 0.0
            )
        self.utc_offset_s = utc_offset_s
        self.detector_factories = dict(DETECTORS if detectors is None else detectors)
        self.state = EngineState()
        self._detectors: dict[tuple[str, str], Detector] = {}
        # Detector models a snapshot could not carry or restore (they learn again).
        self.models_dropped = 0
        # Rule id (or "detector NAME") -> evaluations that raised: that rule was skipped for
        # that reading or tick, every other rule went on (a bug in one, such as a rate that
        # divided by zero, silenced every alarm of the device's readings, and one in a tick
        # stopped the agent).
        self.failures: Counter[str] = Counter()
        # Pickled models, refreshed at most every MODELS_EVERY_S of engine time: snapshots
        # are taken on every alert, and pickling a forest there would slow the alarm path.
        self._models: dict[str, bytes] = {}
        self._models_at: float | None = None
        # A round of pickling in progress (``pickle_models``): its pickles so far, the models
        # left, and the engine time it began.
        self._round: tuple[dict[str, bytes], list[tuple[str, str]], float] | None = None
        self.models_round = 0  # rounds that changed a model: one saving them apart sees a new one
        # Each device's track as last encoded, until a reading changes it: a snapshot (every
        # few seconds, on the event loop) encodes only the devices heard from since the last.
        self._encoded: dict[str, msgspec.Raw] = {}
        self._now = 0.0  # the latest time fed or ticked
        # Moves whenever an alert track opens or closes or a scope is settled (see _Plan).
        # Whatever adds a track to ``state.alerts`` must move it: a plan would otherwise pass
        # the rule by as idle. (A close or a settle not counted only slows a plan down.)
        self._epoch = 0
        self._compiled: list[_Compiled] = []
        self._members: dict[str, dict[str, list[str]]] = {}
        # (rule id, scope key) that lost a device since forget_devices last settled them.
        self._lost: set[tuple[str, str]] = set()
        # Metric -> what its track keeps (DeviceTrack.trim): its samples for rates (how far
        # back, how far apart) and its buckets for window aggregates (how far back, how wide).
        self._keeps: dict[str, _Keep] = {}
        self._tolerance: dict[str, float] = {}
        self._doses: dict[str, Condition] = {}
        # CO metric -> the dose leaves modelled from it, by dose key.
        self._doses_of: dict[str, list[tuple[str, Condition]]] = {}
        self._routine_times = _routines_of(ruleset)
        self._times: dict[str, RoutineTimes | None] = {}  # scope key -> its times (a cache)
        self._install(_rules_of(ruleset))

    # -- rules ----------------------------------------------------------------------------

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._compiled]

    def load_detectors(self) -> None:
        """Make one of each detector the rules score with, and drop it: what they import
        (numpy) is loaded now rather than at a device's first reading. ``anmin edge run``
        does this before it forks the parts, which then share those pages instead of each
        loading its own."""
        for name in sorted({name for compiled in self._compiled for name in compiled.detectors}):
            self.detector_factories[name]()

    def _install(self, rules: list[Rule]) -> None:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise EngineError(f"rule id {rule.id!r} appears twice")
            seen.add(rule.id)
        compiled_rules = [_compile(rule) for rule in rules]
        for compiled in compiled_rules:
            for name in compiled.detectors:
                if name not in self.detector_factories:
                    known = ", ".join(sorted(self.detector_factories)) or "none"
                    raise EngineError(
                        f"rule {compiled.rule.id!r}: no detector named {name!r} (registered: "
                        f"{known})"
                    )
        # Only now: a refused rule set leaves the running one as it was.
        self._compiled = compiled_rules
        self._tolerance, self._doses = {}, {}
        # Metric -> the windows over it: of rates, and of the other aggregates.
        rates: dict[str, list[float]] = {}
        aggregates: dict[str, list[float]] = {}
        for compiled in self._compiled:
            for leaf in compiled.leaves:
                if leaf.over is not None:
                    if leaf.rate is not None:
                        rates.setdefault(leaf.rate, []).append(seconds(leaf.over))
                    elif leaf.metric is not None and leaf.agg != "last":
                        aggregates.setdefault(leaf.metric, []).append(seconds(leaf.over))
                if leaf.stuck is not None:
                    key = leaf.stuck
                    self._tolerance[key] = min(
                        self._tolerance.get(key, leaf.tolerance), leaf.tolerance
                    )
                if leaf.cohb is not None:
                    self._doses[dose_key(leaf)] = leaf
        self._keeps = {}
        for name in rates.keys() | aggregates.keys():
            over, windows = rates.get(name, [0.0]), aggregates.get(name, [0.0])
            self._keeps[name] = (
                max(over),
                min(over) * RATE_SPACING,
                max(windows),
                min(windows) * BUCKET_FRACTION,
                tuple(sorted(set(windows))),
            )
        self._doses_of = {}
        for key, leaf in self._doses.items():
            assert leaf.cohb is not None
            self._doses_of.setdefault(leaf.cohb, []).append((key, leaf))
        self.state.fingerprints = {c.rule.id: c.rule.fingerprint().decode() for c in self._compiled}
        self._rebuild_members()

    def _rebuild_members(self) -> None:
        before = self._members
        self._members = {}
        self._times = {}
        # device id -> the rules it feeds, each with its scope key, and those of them that
        # read detectors: asked on every reading.
        self._matching: dict[str, tuple[list[tuple[_Compiled, str]], list[_Scored]]] = {}
        # Per device and the metrics a reading carries (a device sends the same few, so
        # this stays small): its rules, each with how the reading meets it (_step).
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}
        self._gates: dict[str, dict[tuple[str, ...], _Gate]] = {}  # rule id -> metrics -> gate
        self._merged: dict[_MergedKey, _Gate] = {}  # the passable steps' gates, merged
        self._epoch += 1  # every scope unsettled (see _Plan)
        # (rule id, scope key) -> the scope's device tracks, as _members lists them.
        self._scopes: dict[tuple[str, str], list[DeviceTrack]] = {}
        # (rule id, scope key) judged in full since the rules or the devices last changed:
        # only those may pass a reading's gate without a full evaluation (_Gate).
        self._settled: set[tuple[str, str]] = set()
        # (rule id, device id) -> the shortest silence a silence rule waits for (_silent).
        self._quiet: dict[tuple[str, str], float] = {}
        # Silence rule id -> no idle device of it can fall silent before this time (see tick).
        self._silence_due: dict[str, float] = {}
        for compiled in self._compiled:
            groups: dict[str, list[str]] = {}
            for track in self.state.devices.values():
                if _matches(compiled.rule, track.info):
                    groups.setdefault(scope_key(compiled.rule, track.info), []).append(
                        track.info.id
                    )
            self._members[compiled.rule.id] = groups
        # Scopes that lost a device since forget_devices last looked: their alerts are
        # settled there (a device moved out of a flat, or removed).
        for rule_id, groups in before.items():
            now_in = self._members.get(rule_id, {})
            for key, ids in groups.items():
                if set(ids) - set(now_in.get(key, [])):
                    self._lost.add((rule_id, key))

    def reload(self, ruleset: RuleSet | Sequence[Rule], now: datetime) -> list[Transition]:
        """Run new rules. An unchanged rule keeps all its state; an edited one keeps its open
        alerts (they clear by the new clear condition) but restarts its timers; a removed
        one clears its open alerts."""
        old = {c.rule.id: c for c in self._compiled}
        old_prints = dict(self.state.fingerprints)
        routine_times = _routines_of(ruleset)
        self._install(_rules_of(ruleset))
        self._routine_times = routine_times
        self._times = {}
        return self._carry_over(old, old_prints, now)

    def _carry_over(
        self, old: Mapping[str, _Compiled], old_prints: Mapping[str, str], now: datetime | None
    ) -> list[Transition]:
        out: list[Transition] = []
        current = self.state.fingerprints
        for rule_id in list(self.state.alerts):
            tracks = self.state.alerts[rule_id]
            if rule_id not in current:
                gone = old.get(rule_id)
                for key, track in tracks.items():
                    if track.severity is not None and gone is not None and now is not None:
                        out.append(
                            self._transition(
                                gone,
                                key,
                                Phase.CLEARED,
                                track.severity,
                                now,
                                {},
                                track.device,
                                "rule removed",
                            )
                        )
                del self.state.alerts[rule_id]
            elif old_prints.get(rule_id) != current[rule_id]:
                for key, track in list(tracks.items()):
                    track.since, track.hits, track.latches = {}, {}, {}
                    track.clear_since = None
                    if track.idle():
                        del tracks[key]
        self._epoch += 1  # alert tracks dropped
        return out

    # -- input ----------------------------------------------------------------------------

    def add_devices(self, devices: Iterable[DeviceInfo], now: datetime) -> None:
        """Devices that should report: silence is counted from now even if they never do."""
        at = now.timestamp()
        changed = False
        for info in devices:
            changed |= self._register(info, at)
        if changed:
            self._rebuild_members()

    def forget_devices(self, keep: Collection[str], now: datetime) -> list[Transition]:
        """Forget every device not in ``keep`` (taken out of the config, or no longer
        discovered), then settle the raised alerts whose scopes lost a device (removed here,
        or moved to another unit, room or kind by ``add_devices``). A removed device never
        reports again: a silence rule would hold its alarm for ever, and a flat's fire alarm
        would wait for ever for the clear of a smoke detector taken away.

        An alert whose scope has no device left clears ("device removed or moved"); so does
        one whose clear condition reads metrics that no device left reports (it could never
        clear). Any other stays, and its own conditions decide on the devices left, hysteresis
        and hold included: the removed device's last readings count no more. A learned routine
        that no device left in its scope can see is dropped (inactivity would hold for ever),
        unless a device there has not reported yet (a sensor swapped for a new one)."""
        gone = {device for device in self.state.devices if device not in keep}
        removed = {device: self.state.devices.pop(device).info for device in gone}
        if gone:
            for device in gone:
                self._encoded.pop(device, None)
            for pair in [pair for pair in self._detectors if pair[0] in gone]:
                del self._detectors[pair]
            kept = {k: v for k, v in self._models.items() if k.partition(_SEP)[0] not in gone}
            if kept != self._models:
                self._models = kept
                self.models_round += 1
            self._rebuild_members()
        lost, self._lost = self._lost, set()
        # Alerts of scopes no device is in now: a restart with a rule's scope or devices
        # edited finds them here (a restored engine has no memory of its old members).
        for rule_id, tracks in self.state.alerts.items():
            members = self._members.get(rule_id, {})
            lost.update((rule_id, key) for key in tracks if key not in members)
        if not lost:
            return []
        self._drop_unseen_routines({key for _, key in lost})
        out: list[Transition] = []
        compiled_by_id = {c.rule.id: c for c in self._compiled}
        for rule_id, key in sorted(lost):
            compiled = compiled_by_id.get(rule_id)
            tracks = self.state.alerts.get(rule_id, {})
            track = tracks.get(key)
            if compiled is None or track is None:
                continue
            ids = self._members.get(rule_id, {}).get(key, [])
            if ids and (track.severity is None or self._can_clear(compiled, key)):
                continue
            del tracks[key]
            self._epoch += 1
            if track.severity is not None:
                info = removed.get(track.device or key)
                note = "device removed or moved"
                clear = self._transition(
                    compiled, key, Phase.CLEARED, track.severity, now, {}, None, note, info=info
                )
                out.append(clear)
        return out

    @property
    def unsettled(self) -> bool:
        """Whether scopes lost a device since ``forget_devices`` last settled them."""
        return bool(self._lost)

    def _can_clear(self, compiled: _Compiled, key: str) -> bool:
        """Whether the devices in the scope can still make the rule's clear condition hold
        (none: it clears once no create level holds, which its devices decide). Only metrics
        are known not to come: a device that has not reported yet, or a leaf of another kind
        (a time, a dose, a score), is given the benefit of the doubt, and the alert stays."""
        clear = compiled.clear[0] if compiled.clear is not None else None
        devices = self._scope(compiled.rule.id, key)
        if clear is None or any(d.last_at is None for d in devices):
            return True
        names = {n for d in devices for n in d.metrics}
        return _readable(clear, names)

    def _drop_unseen_routines(self, scopes: set[str]) -> None:
        """Routines are kept per scope and metrics (routine_key): one of ``scopes`` whose
        devices left report none of its metrics cannot learn or see activity again. Kept while
        a device there has not reported yet: it may be the one to see it."""
        for name in list(self.state.routines):
            scope, _, metrics = name.partition("|")
            if scope not in scopes:
                continue
            ids = {i for groups in self._members.values() for i in groups.get(scope, [])}
            tracks = [self.state.devices[i] for i in ids]
            if any(t.last_at is None for t in tracks):
                continue
            names = metrics.split(",")
            if not any(n in t.metrics for t in tracks for n in names):
                del self.state.routines[name]

    def _register(self, info: DeviceInfo, at: float) -> bool:
        self._encoded.pop(info.id, None)
        track = self.state.devices.get(info.id)
        if track is None:
            self.state.devices[info.id] = DeviceTrack(info=info, first_at=at)
            return True
        if track.info != info:
            track.info = info
            return True
        return False

    def _clock_set_back(self, at: float) -> None:
        """The gateway's clock went back more than CLOCK_STEP_S (NTP after a boot with the
        clock ahead, say). Every time stored after ``at`` becomes ``at``: else a hold would
        wait out the jump before its alarm (an hour's step, an hour with no gas alarm), a
        clear would keep a siren on as long, a rate would find no sample old enough, a
        learned routine would see no activity until the clock caught up, and a dose would run
        backwards. Silences are due again (they come earlier now). Clamped, not shifted:
        times from before the clock ran ahead were right."""
        self._silence_due.clear()
        for tracks in self.state.alerts.values():
            for alert in tracks.values():
                for severity, since in alert.since.items():
                    alert.since[severity] = min(since, at)
                for severity, hits in alert.hits.items():
                    alert.hits[severity] = [min(hit, at) for hit in hits]
                for path, held in alert.latches.items():
                    alert.latches[path] = min(held, at)
                if alert.clear_since is not None:
                    alert.clear_since = min(alert.clear_since, at)
        for routine in self.state.routines.values():
            if routine.last_activity is not None:
                routine.last_activity = min(routine.last_activity, at)
        for track in self.state.devices.values():
            # Samples stamped after ``at`` count as taken at ``at`` (clamped, so the lists
            # stay sorted): a rate found no sample old enough, new samples joined the last
            # bucket, a silence or a stuck value waited out the jump.
            track.first_at = min(track.first_at, at)
            if track.last_at is not None:
                track.last_at = min(track.last_at, at)
            for kept in track.metrics.values():
                kept.at = min(kept.at, at)
                kept.steady_since = min(kept.steady_since, at)
                if kept.nonzero_at is not None:
                    kept.nonzero_at = min(kept.nonzero_at, at)
                if kept.history and kept.history[-1][0] > at:
                    kept.history = [(min(t, at), value) for t, value in kept.history]
                for bucket in reversed(kept.buckets):
                    if bucket.last <= at:
                        break
                    bucket.first, bucket.last = min(bucket.first, at), at
            for dose in track.doses.values():
                dose.at = min(dose.at, at)
        self._encoded.clear()  # every device is encoded afresh
        if self._models_at is not None:
            self._models_at = min(self._models_at, at)
        if self._round is not None:
            fresh, left, began = self._round
            self._round = (fresh, left, min(began, at))
        self._now = at

    def feed(
        self,
        device: DeviceInfo,
        reading: Reading,
        now: datetime,
        outside: Mapping[str, float] | None = None,
    ) -> list[Transition]:
        """One reading from ``device``, arriving at ``now`` (the gateway's time). ``outside``:
        the values left out of it as outside their sensor's physical range
        (``wire.metrics.outside_range``): those channels are faulted (``out_of_range``) and
        keep their last good value for every other leaf."""
        at = now.timestamp()
        if at > self._now:
            self._now = at
        elif at < self._now - CLOCK_STEP_S:
            self._clock_set_back(at)
        elif at < self._now:
            self._silence_due.clear()  # silences may be due a little earlier
        track = self.state.devices.get(device.id)
        if track is None or (track.info is not device and track.info != device):
            if self._register(device, at):
                self._rebuild_members()
            track = self.state.devices[device.id]
        self._encoded.pop(device.id, None)
        values = reading.values
        track.record(values, at, reading.ts.timestamp())
        names = tuple(values)
        if outside or track.faulted:
            track.fault(values, outside)
            if outside:  # the rules on a faulted channel meet the reading (its range rules)
                names += tuple(name for name in outside if name not in values)
        tolerances = self._tolerance
        star = tolerances.get("*", 0.0)
        keeps, doses = self._keeps, self._doses_of
        for name in values:
            track.trim(name, tolerances.get(name, star), *keeps.get(name, _KEEP_NOTHING))
            for key, leaf in doses.get(name, ()):
                ppm = values[name]
                dose = track.doses.get(key)
                if dose is None:
                    track.doses[key] = Dose(cohb=leaf.cohb0, ppm=ppm, at=at)
                else:
                    dose.update(ppm, at, leaf.work)
        out: list[Transition] = []
        rules = self._matching.get(device.id)
        if rules is None:
            rules = self._matching[device.id] = self._rules_for(device)
        matching, scored = rules
        if scored and not outside:
            # A reading with a faulted channel neither teaches nor scores: a detector fixes its
            # channels from the first reading it learns, and would go blind to the broken one.
            self._score(scored, device, track, values, at)
        plan = self._plans.get((device.id, names))
        if plan is None:
            if len(self._plans) >= PLANS_LIMIT:  # odd mixes of metrics: bounded all the same
                self._plans.clear()
                self._gates.clear()
                self._merged.clear()
            made = [
                _step(compiled, key, names, self._gates.setdefault(compiled.rule.id, {}))
                for compiled, key in matching
            ]
            plan = self._plans[(device.id, names)] = _Plan(made, self._merged, self._bounded(made))
        alerts, settled = self.state.alerts, self._settled
        steps = plan.steps
        if plan.gate is not None:
            if plan.checked != self._epoch:
                plan.calm = all(
                    key not in alerts.get(rule_id, ()) and (mode == _WATCHED or settle in settled)
                    for mode, rule_id, key, settle in plan.passable
                )
                plan.checked = self._epoch
            try:
                quick = plan.calm and not plan.gate.holds(track)
            except Exception:  # each step on its own, below: the one that fails is named
                quick = False
            if quick:
                steps = plan.rest  # each passable step would be passed (the loop below)
        for mode, compiled, key, rule_id, settle, gate, routines in steps:
            try:
                for leaf in routines:
                    if any(values.get(name, 0.0) for name in leaf.inactive or []):
                        routine = self.state.routines.setdefault(routine_key(key, leaf), Routine())
                        check = up_by(leaf, self.scope_times(key))
                        routine.activity(at, seconds(leaf.default), self.utc_offset_s, check)
                if mode != _JUDGE:
                    tracks = alerts.get(rule_id)
                    if tracks is None or key not in tracks:  # idle in this scope
                        if mode == _WATCHED:
                            continue
                        assert gate is not None
                        if (
                            settle in settled
                            and not gate.holds(track)
                            and not self._opens(gate, compiled, key, track, at)
                        ):
                            continue
                        if gate.bounds is not None and not gate.may_hold(self._scope(rule_id, key)):
                            # No level can hold: judged in full, the idle rule would stay idle
                            # (no latch, no repeat: _bounds and _step), so it counts as judged.
                            if settle not in settled:
                                settled.add(settle)
                                self._epoch += 1
                            continue
                out += self._evaluate(compiled, key, now, fed=True)
            except Exception:  # one rule that fails must not take the device's others with it
                self._failed(rule_id)
        return out

    def _bounded(self, steps: list[_Step]) -> tuple[_Bounded, ...]:
        """The gates of ``steps`` whose bounds are narrower than their leaves (an "all" of
        latest values), each with its scope's devices, for the plan's merged gate (see
        _Gate.merged). A scope's list changes only in _rebuild_members, which also makes the
        plans and merged gates afresh."""
        out = []
        for step in steps:
            gate = step[5]
            if (
                gate is not None
                and gate.bounds is not None
                and any(len(c) > 1 for c in gate.bounds)
            ):
                out.append((gate, self._scope(step[3], step[2])))
        return tuple(out)

    def _failed(self, what: str) -> None:
        count = self.failures[what] = self.failures[what] + 1
        if count == 1 or count % 10_000 == 0:  # logged, not once per reading
            log.exception("rules: %s failed (%d times so far); the other rules go on", what, count)

    def _rules_for(self, device: DeviceInfo) -> tuple[list[tuple[_Compiled, str]], list[_Scored]]:
        """The device's rules with their scope keys, and those of them reading detectors."""
        matching = [
            (c, scope_key(c.rule, device)) for c in self._compiled if _matches(c.rule, device)
        ]
        scored = [(c.rule.id, key, sorted(c.detectors)) for c, key in matching if c.detectors]
        return matching, scored

    def _opens(
        self, gate: _Gate, compiled: _Compiled, key: str, device: DeviceTrack, at: float
    ) -> bool:
        """Whether a leaf ``gate.holds`` does not test holds: one of the reading's metrics on
        the device, or a timed one in the scope (see _Gate)."""
        if not gate.others and not gate.timed:
            return False
        ctx = Context(at, self.utc_offset_s, self.state.routines, key, self.scope_times(key))
        one = (device,)
        if any(evaluate_leaf(leaf, one, ctx)[0] for leaf in gate.others):
            return True
        devices = self._scope(compiled.rule.id, key)
        # A CO dose under its threshold that cannot reach it (as at ticks): no exponential.
        if compiled.doses_only and not dose_may_reach(gate.timed, devices):
            return False
        return any(evaluate_leaf(leaf, devices, ctx)[0] for leaf in gate.timed)

    def _scope(self, rule_id: str, key: str) -> list[DeviceTrack]:
        devices = self._scopes.get((rule_id, key))
        if devices is None:
            ids = self._members.get(rule_id, {}).get(key, [])
            devices = self._scopes[(rule_id, key)] = [self.state.devices[i] for i in ids]
        return devices

    def scope_times(self, key: str) -> RoutineTimes | None:
        """The usual times the rule set gives a scope: its own (a resident's id or a flat's
        "building/unit"), else, for a flat, its residents' (the latest wake time, when
        several are given), else, for a resident, their flat's."""
        if key in self._times:
            return self._times[key]
        found = self._routine_times.get(key)
        if found is None and self._routine_times:
            given: list[RoutineTimes] = []
            for track in self.state.devices.values():
                info, flat = track.info, _flat(track.info)
                if info.resident is not None and flat == key:
                    other = self._routine_times.get(info.resident)
                elif info.resident == key and flat is not None:
                    other = self._routine_times.get(flat)
                else:
                    continue
                if other is not None:
                    given.append(other)
            found = max(given, key=lambda t: parse_clock(t.wake), default=None)
        self._times[key] = found
        return found

    def _score(
        self,
        scored: Sequence[_Scored],
        device: DeviceInfo,
        track: DeviceTrack,
        values: Mapping[str, float],
        at: float,
    ) -> None:
        """Each detector the device's rules read scores the reading once and learns it once
        (one instance per device and detector, however many rules read it), unless an alert
        of a rule reading it is open for this device: anomalies stay out of learning."""
        held: dict[str, bool] = {}  # detector -> an alert reading it is open
        for rule_id, key, names in scored:
            alert = self.state.alerts.get(rule_id, {}).get(key)
            raised = alert is not None and alert.severity is not None
            for name in names:
                held[name] = held.get(name, False) or raised
        x = {**values, TIME_KEY: at + self.utc_offset_s}  # local time, for seasonal baselines
        for name, alert_open in held.items():
            try:
                detector = self._detectors.get((device.id, name))
                if detector is None:
                    factory = self.detector_factories[name]
                    detector = self._detectors[(device.id, name)] = factory()
                track.scores[name] = detector.score_one(x)
                if not alert_open:
                    detector.learn_one(x)
            except Exception:  # no score rather than a stale one; the rules go on
                track.scores.pop(name, None)
                self._failed(f"detector {name}")

    def tick(self, now: datetime) -> list[Transition]:
        """Let time pass: holds complete, clears complete, silence and routines are checked.

        A rule idle in a scope and judged there since the rules or its devices changed can
        only be changed by time through a timed leaf (see _Gate): only those are tested, and
        the rule is judged in full when one holds (at 10,000 devices a tick took ~15 ms, most
        of it judging the CO dose rule for every CO sensor, an alarm's wait when it lands)."""
        at = now.timestamp()
        if at < self._now - CLOCK_STEP_S:
            self._clock_set_back(at)
        elif at < self._now:
            self._silence_due.clear()  # silences may be due a little earlier
        self._now = max(self._now, at)
        out: list[Transition] = []
        devices, settled = self.state.devices, self._settled
        for compiled in self._compiled:
            rule_id = compiled.rule.id
            tracks = self.state.alerts.get(rule_id, {})
            members = self._members.get(rule_id, {})
            silences = compiled.silences is not None
            # A silence rule whose idle devices cannot fall silent yet: readings only put a
            # device's silence off, and a track that turns idle resets this (_evaluate).
            waiting = silences and _GATE_TICKS and at < self._silence_due.get(rule_id, 0.0)
            if not compiled.clocked or waiting:  # only its running tracks can change
                keys: Iterable[str] = [key for key in tracks if key in members]
            else:
                keys = members
            due = math.inf  # the earliest an idle device of a silence rule falls silent
            if silences and not waiting:
                self._silence_due[rule_id] = due  # _evaluate drops it if a track turns idle
            timed = compiled.timed
            for key in keys:
                try:
                    track = tracks.get(key)
                    if track is None or track.idle():
                        if not compiled.clocked:
                            continue
                        if silences:
                            device = devices.get(key)  # a device scope's key is its id
                            if device is not None:
                                silent_at = self._silent_at(compiled, device)
                                if at < silent_at:
                                    due = min(due, silent_at)
                                    continue
                            due = at  # judged while idle: again at the next tick
                        elif _GATE_TICKS and (rule_id, key) in settled:
                            if not timed:
                                continue
                            scope = self._scope(rule_id, key)
                            if compiled.doses_only and not dose_may_reach(timed, scope):
                                continue
                            ctx = Context(
                                at,
                                self.utc_offset_s,
                                self.state.routines,
                                key,
                                self.scope_times(key),
                            )
                            if not any(evaluate_leaf(leaf, scope, ctx)[0] for leaf in timed):
                                continue
                    out += self._evaluate(compiled, key, now, fed=False)
                except Exception:  # nor a tick every rule after it (nor the agent: see _failed)
                    self._failed(rule_id)
            if silences and not waiting and rule_id in self._silence_due:
                self._silence_due[rule_id] = due
        return out

    def _silent_at(self, compiled: _Compiled, device: DeviceTrack) -> float:
        """When one of the rule's silence leaves holds on the device if nothing more is heard
        (``silence``, without a call per leaf: the shortest limit, kept per rule and device)."""
        assert compiled.silences is not None
        cache = (compiled.rule.id, device.info.id)
        limit = self._quiet.get(cache)
        if limit is None:
            limit = self._quiet[cache] = min(
                silence_limit(leaf, device) for leaf in compiled.silences
            )
        last = device.last_at if device.last_at is not None else device.first_at
        return last + limit

    # -- deciding -------------------------------------------------------------------------

    def _condition(
        self,
        cond: Condition,
        devices: Sequence[DeviceTrack],
        ctx: Context,
        alert: AlertTrack,
        path: str,
    ) -> tuple[bool, Evidence, str | None]:
        children = cond.all if cond.all is not None else cond.any
        if children is not None:
            # Every child is judged (no short cut): each one's "within" latch must see it.
            evidence: Evidence = {}
            device: str | None = None
            held = 0
            for i, child in enumerate(children):
                # Paths name latches; a plain leaf has none, and spares the string.
                plain = child.within is None and child.all is None and child.any is None
                ok, found, where = self._condition(
                    child, devices, ctx, alert, path if plain else f"{path}.{i}"
                )
                if ok:
                    held += 1
                    evidence.update(found)
                    device = device if device is not None else where
            ok = bool(held) and (cond.any is not None or held == len(children))
            if not ok:
                evidence, device = {}, None
        else:
            ok, evidence, device = evaluate_leaf(cond, devices, ctx)
        if cond.within is not None:
            if ok:
                alert.latches[path] = ctx.now
            elif path in alert.latches:
                if ctx.now - alert.latches[path] <= seconds(cond.within):
                    ok = True
                else:
                    del alert.latches[path]
        return (ok, evidence, device)

    def _evaluate(
        self, compiled: _Compiled, key: str, now: datetime, *, fed: bool
    ) -> list[Transition]:
        rule = compiled.rule
        at = now.timestamp()
        devices = self._scope(rule.id, key)
        settle = (rule.id, key)
        if settle not in self._settled:
            self._settled.add(settle)
            self._epoch += 1
        tracks = self.state.alerts.setdefault(rule.id, {})
        found = tracks.get(key)
        alert = found or AlertTrack()
        ctx = Context(at, self.utc_offset_s, self.state.routines, key, self.scope_times(key))
        out = self._decide(compiled, key, alert, devices, ctx, now, fed)
        if alert.idle():
            if tracks.pop(key, None) is not None:
                self._epoch += 1
                if compiled.silences is not None:
                    self._silence_due.pop(rule.id, None)  # its devices are idle ones again
        else:
            if found is None:
                self._epoch += 1
            tracks[key] = alert
        return out

    def _decide(
        self,
        compiled: _Compiled,
        key: str,
        alert: AlertTrack,
        devices: Sequence[DeviceTrack],
        ctx: Context,
        now: datetime,
        fed: bool,
    ) -> list[Transition]:
        at = ctx.now
        met: tuple[str, Evidence, str | None] | None = None
        any_raw = False
        for severity, level, cond, hold in compiled.levels:
            ok, evidence, device = self._condition(cond, devices, ctx, alert, severity)
            any_raw |= ok
            reached = False
            if level.repeat is not None and level.within is not None:
                hits = alert.hits.setdefault(severity, [])
                if ok and fed:
                    hits.append(at)
                    if len(hits) > level.repeat:  # the newest `repeat` decide: a long window
                        del hits[0]  # must not keep every hit in the state for its length
                window = seconds(level.within)
                while hits and hits[0] <= at - window:
                    hits.pop(0)
                reached = len(hits) >= level.repeat
                if not hits:
                    del alert.hits[severity]
            elif ok:
                reached = at - alert.since.setdefault(severity, at) >= hold
            else:
                alert.since.pop(severity, None)
            if reached and met is None:
                met = (severity, evidence, device)
        current = alert.severity
        if met is not None and SEVERITY_RANK[met[0]] > SEVERITY_RANK.get(current or "", 0):
            severity, evidence, device = met
            phase = Phase.RAISED if current is None else Phase.UPDATED
            if current is None:
                alert.raised_at, alert.device = at, device
            alert.severity, alert.clear_since = severity, None
            actions = _actions(compiled.rule, severity, current)
            return [
                self._transition(
                    compiled, key, phase, severity, now, evidence, device, None, actions
                )
            ]
        if current is None:
            return []
        if any_raw:
            alert.clear_since = None
            return []
        evidence, hold = {}, 0.0
        if compiled.clear is not None:
            clear_cond, hold = compiled.clear
            if clear_cond is not None:
                ok, evidence, _ = self._condition(clear_cond, devices, ctx, alert, "clear")
                if not ok:
                    alert.clear_since = None
                    return []
        if alert.clear_since is None:
            alert.clear_since = at
        if at - alert.clear_since < hold:
            return []
        device = alert.device
        alert.severity = alert.raised_at = alert.device = alert.clear_since = None
        return [
            self._transition(compiled, key, Phase.CLEARED, current, now, evidence, device, None)
        ]

    def _transition(
        self,
        compiled: _Compiled,
        key: str,
        phase: Phase,
        severity: str,
        now: datetime,
        evidence: Evidence,
        device: str | None,
        note: str | None,
        actions: tuple[Action, ...] = (),
        *,
        info: DeviceInfo | None = None,
    ) -> Transition:
        """``info``: where the alert was, for a device no longer known (forget_devices)."""
        rule = compiled.rule
        ids = self._members.get(rule.id, {}).get(key, [])
        if info is None and device is not None and device in self.state.devices:
            info = self.state.devices[device].info
        elif info is None and ids:
            info = self.state.devices[ids[0]].info
        if rule.scope == "device":
            device = key
        where = {
            "key": key,
            "device": device or "",
            "building": info.building if info else "",
            "unit": (info.unit or "") if info else "",
            "room": (info.room or "") if info else "",
        }
        evidence = dict(list(evidence.items())[:MAX_EVIDENCE])
        if note is not None:
            message = f"{rule.kind} alert cleared: {note}"
        elif phase is Phase.CLEARED:
            message = f"{rule.kind} back to normal at {key}"
        else:
            message = _message(rule, severity, evidence, where)
        return Transition(
            phase=phase,
            severity=Severity(severity),
            rule=rule.id,
            kind=rule.kind,
            at=now,
            evidence=evidence,
            message=message,
            scope=rule.scope,
            key=key,
            device=device,
            building=info.building if info else None,
            unit=info.unit if info and rule.scope in ("device", "unit", "resident") else None,
            resident=info.resident if info else None,
            actions=actions,
            life_safety=rule.life_safety,
        )

    # -- inspection and persistence -----------------------------------------------------

    def active(self) -> list[tuple[str, str, str]]:
        """Open alerts as (rule id, scope key, severity)."""
        return [
            (rule_id, key, track.severity)
            for rule_id, tracks in self.state.alerts.items()
            for key, track in tracks.items()
            if track.severity is not None
        ]

    def snapshot(self, *, models: bool | None = None, with_models: bool = True) -> bytes:
        """All state as bytes (msgpack), with the learned detector models (pickled), so a
        restarted gateway keeps its baselines. Models are pickled again only when
        ``MODELS_EVERY_S`` of engine time has passed since the last time (or ``models`` is
        True); in between a snapshot carries the last pickles, so a restart loses at most
        that much learning. ``with_models=False`` leaves them out, for a caller that saves
        them apart (``models_snapshot``): they are most of the bytes and change only every
        round. A snapshot is trusted input: restore only what this gateway wrote itself."""
        if models:
            self._round, self._models_at = None, None  # a round now, whole
        if models is None or models:
            self.pickle_models()
        self.encode_devices()
        devices = {device: self._encoded[device] for device in self.state.devices}
        carried = self._models if with_models else {}
        state = msgspec.structs.replace(self.state, devices=devices, detectors=carried)
        return _ENCODER.encode(state)

    def pickle_models(self, limit: int | None = None) -> int:
        """Pickle up to ``limit`` detector models of the round that is due (every
        ``MODELS_EVERY_S`` of engine time; all of it by default); return how many models the
        round has left. A caller may spread a round over several turns of its event loop
        before ``snapshot``: a forest takes ~23 ms, and a gateway's whole set at once held up
        its alarms. The snapshot carries the last whole round."""
        if self._round is None:
            if self._models_at is not None and self._now - self._models_at < MODELS_EVERY_S:
                return 0
            self._round = ({}, sorted(self._detectors), self._now)
        fresh, left, began = self._round
        taken = left if limit is None else left[:limit]
        for device, name in taken:
            detector = self._detectors.get((device, name))
            if detector is None:
                continue  # gone since the round began
            try:
                fresh[f"{device}{_SEP}{name}"] = pickle.dumps(detector, protocol=5)
            except (pickle.PicklingError, TypeError, AttributeError):
                self.models_dropped += 1  # a custom detector that cannot be pickled relearns
        del left[: len(taken)]
        if left:
            return len(left)
        if fresh != self._models:  # none, or none learned anything: nothing new to save
            self.models_round += 1
        self._models, self._models_at, self._round = fresh, began, None
        return 0

    def carries_models(self) -> bool:
        """Whether models were restored with the state or pickled since (``models_snapshot``
        has some to give)."""
        return bool(self._models)

    def models_snapshot(self) -> bytes:
        """The last whole round of pickled models alone (see ``snapshot(with_models=False)``):
        a gateway writes them when a round is new, not with every save of the state."""
        return _ENCODER.encode(self._models)

    def restore_models(self, data: bytes) -> None:
        """Models saved by ``models_snapshot``, over those the state carried (if any). Damage
        or another configuration means: learn again (``models_dropped``)."""
        try:
            models = msgspec.msgpack.decode(data, type=dict[str, bytes])
        except msgspec.DecodeError as exc:
            raise EngineError(f"not a models snapshot: {exc}") from exc
        self._restore_detectors(models)
        self._models = {**self._models, **models}

    def encode_devices(self, limit: int | None = None) -> int:
        """Encode up to ``limit`` of the devices changed since they were last encoded (all, by
        default); return how many changed devices are left. A caller may spread this over
        several turns of its event loop before ``snapshot``, which then has little left to do:
        a device that changes in between is encoded again, so the snapshot stays exact."""
        left = [d for d in self.state.devices if d not in self._encoded]
        for device in left[:limit]:
            self._encoded[device] = msgspec.Raw(_ENCODER.encode(self.state.devices[device]))
        return max(0, len(left) - (limit if limit is not None else len(left)))

    def _restore_detectors(self, models: Mapping[str, bytes]) -> None:
        """Detector models from a snapshot, kept only where the detector registered under the
        same name today is built from the same configuration (else it learns again)."""
        for key, blob in models.items():
            device, _, name = key.partition(_SEP)
            factory = self.detector_factories.get(name)
            if factory is None:
                continue
            try:
                model = pickle.loads(blob)  # noqa: S301 - the gateway's own snapshot
            except Exception:  # any damage means: learn again
                self.models_dropped += 1
                continue
            fresh = factory()
            if type(model) is type(fresh) and _config(model) == _config(fresh):
                self._detectors[(device, name)] = model
            else:
                self.models_dropped += 1

    @classmethod
    def restore(
        cls,
        ruleset: RuleSet | Sequence[Rule],
        data: bytes,
        *,
        utc_offset_s: float | None = None,
        detectors: Mapping[str, DetectorFactory] | None = None,
    ) -> Engine:
        """An engine for ``ruleset`` continuing from a snapshot. Rules edited since keep their
        open alerts but restart their timers; alerts of removed rules are dropped."""
        engine = cls(ruleset, utc_offset_s=utc_offset_s, detectors=detectors)
        try:
            saved = msgspec.msgpack.decode(data, type=EngineState)
        except msgspec.DecodeError as exc:
            raise EngineError(f"not an engine snapshot: {exc}") from exc
        if saved.v != SNAPSHOT_VERSION:
            raise EngineError(f"snapshot version {saved.v}, this engine reads {SNAPSHOT_VERSION}")
        prints = engine.state.fingerprints
        old_prints = saved.fingerprints
        saved.fingerprints = prints
        models, saved.detectors = saved.detectors, {}
        engine.state = saved
        engine._restore_detectors(models)
        engine._models = dict(models)
        engine._carry_over({}, old_prints, None)
        engine._rebuild_members()
        # An edited rule may have lost devices from its scopes (its kinds or scope changed):
        # its open alerts are settled as the agent starts (forget_devices).
        for rule_id, tracks in engine.state.alerts.items():
            if old_prints.get(rule_id) != prints.get(rule_id):
                engine._lost.update((rule_id, key) for key in tracks)
        # Windows read at once, not only from each metric's next reading.
        for track in engine.state.devices.values():
            for name, metric_track in track.metrics.items():
                width = engine._keeps.get(name, _KEEP_NOTHING)[3]
                if width and metric_track.history and not metric_track.buckets:
                    metric_track.bucket_history(width)
        return engine
