"""Scenario files (YAML): a community, its residents and devices, and a timeline of incidents
and device faults. Validated strictly: an unknown key or a bad value is an error naming the
file, the line and the key (the same shape as ``rules/config.py``; the simulator may not import
``rules``, so the loader is its own).

Times in the timeline are offsets from the scenario's start: a number of seconds or a string
such as ``90s``, ``5m``, ``1h30m``. See docs/simulator.md for a worked example.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml
from msgspec import Meta

from firmware_sim.errors import ScenarioError

T = TypeVar("T")

Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")]
Name = Annotated[str, Meta(min_length=1, max_length=64)]
Duration = float | Annotated[str, Meta(pattern=r"^\s*(\d+(\.\d+)?\s*[smhd]\s*)+$")]
Hour = Annotated[float, Meta(ge=0, le=24)]
Rate = Annotated[float, Meta(ge=0, le=1)]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Duration) -> float:
    """A duration in seconds: a number (seconds) or a string such as ``1h30m``."""
    if isinstance(value, int | float):
        return float(value)
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(value))


class _Strict(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


DeviceKind = Literal[
    "gas",
    "co",
    "smoke",
    "heat",
    "electrical",
    "flood",
    "locker",
    "pir",
    "door",
    "bed",
    "wearable",
    "sos",
    "speaker",
    "pump",
]


class DeviceSpec(_Strict, kw_only=True, frozen=True):
    """One device. ``id`` defaults to ``{kind}-{building}[-{unit}][-{room}]``."""

    kind: DeviceKind
    id: Id | None = None
    room: Name | None = None
    resident: Id | None = None
    interval_s: Annotated[float, Meta(gt=0, le=86400)] | None = None
    jitter: Annotated[float, Meta(ge=0, lt=1)] = 0.1
    gas: Literal["methane", "lpg"] = "methane"  # gas detectors only
    doors: Annotated[int, Meta(ge=1, le=8)] = 6  # locker banks only
    chilled: Annotated[int, Meta(ge=0, le=8)] = 1  # locker banks: chilled doors (the first N)
    failing: bool = False  # speakers only: every play fails

    def __post_init__(self) -> None:
        if self.kind == "locker" and self.chilled > self.doors:
            raise ValueError(f"chilled ({self.chilled}) must not exceed doors ({self.doors})")


class ResidentSpec(_Strict, kw_only=True, frozen=True):
    id: Id
    elderly: bool = False
    works: bool = False
    wake_h: Hour = 6.5
    sleep_h: Hour = 22.0


class Template(_Strict, kw_only=True, frozen=True):
    """Devices (and residents) that many units share; resident ids get ``-{building}-{unit}``."""

    devices: list[DeviceSpec] = []
    residents: list[ResidentSpec] = []
    cooks: bool = True


class UnitSpec(_Strict, kw_only=True, frozen=True):
    """A flat, or with ``floors`` a range of flats (``floors: [2, 6], per_floor: 4`` makes
    201-204 ... 601-604) built from ``template``."""

    id: Id | None = None
    floors: Annotated[
        list[Annotated[int, Meta(ge=1, le=99)]], Meta(min_length=2, max_length=2)
    ] = []
    per_floor: Annotated[int, Meta(ge=1, le=20)] = 1
    template: Name | None = None
    devices: list[DeviceSpec] = []
    residents: list[ResidentSpec] = []
    cooks: bool | None = None

    def __post_init__(self) -> None:
        if (self.id is None) == (not self.floors):
            raise ValueError("a unit needs exactly one of 'id' or 'floors'")
        if self.floors and self.floors[0] > self.floors[1]:
            raise ValueError("floors must be [lowest, highest]")
        if self.floors and self.residents:
            raise ValueError("a range of units takes its residents from its template")


class BuildingSpec(_Strict, kw_only=True, frozen=True):
    id: Id
    gateway: Id | None = None  # defaults to gw-{building}
    units: list[UnitSpec] = []
    devices: list[DeviceSpec] = []  # shared: garage, lockers, pump room, speakers, circuits


class SiteSpec(_Strict, kw_only=True, frozen=True):
    id: Id
    buildings: Annotated[list[BuildingSpec], Meta(min_length=1)]


# Incidents: one struct per kind, tagged by ``kind``.


class _Incident(_Strict, kw_only=True, frozen=True, tag_field="kind"):
    at: Duration
    id: Name | None = None


class GasLeak(_Incident, kw_only=True, frozen=True, tag="gas_leak"):
    unit: Name  # building/unit, e.g. n1/101
    speed: Literal["slow", "fast"] = "fast"
    peak_lel: Annotated[float, Meta(gt=10, le=100)] = 40.0
    duration: Duration = "10m"  # how long the source runs (then it airs out)


class CarbonMonoxide(_Incident, kw_only=True, frozen=True, tag="co"):
    """A blocked flue: CO ramps up to ``ppm`` and fluctuates around it."""

    unit: Name
    ppm: Annotated[float, Meta(gt=0, le=2000)] = 300.0
    ramp: Duration = "5m"
    fluctuation: Annotated[float, Meta(ge=0, le=0.5)] = 0.2
    duration: Duration = "30m"


class KitchenFire(_Incident, kw_only=True, frozen=True, tag="kitchen_fire"):
    """Smoke first; heat (and CO) follow ``heat_after`` later."""

    unit: Name
    heat_after: Duration = "90s"
    rise_k_min: Annotated[float, Meta(gt=0, le=60)] = 10.0
    duration: Duration = "15m"


class ElectricalFault(_Incident, kw_only=True, frozen=True, tag="electrical_fault"):
    device: Id
    residual_ma: Annotated[float, Meta(gt=0, le=3000)] = 500.0
    cable_c: Annotated[float, Meta(gt=0, le=200)] = 85.0
    ramp: Duration = "3m"
    duration: Duration = "20m"


class Flood(_Incident, kw_only=True, frozen=True, tag="flood"):
    device: Id
    cm_per_min: Annotated[float, Meta(gt=0, le=50)] = 1.0
    peak_cm: Annotated[float, Meta(gt=1, le=500)] = 30.0
    duration: Duration = "30m"


class Fall(_Incident, kw_only=True, frozen=True, tag="fall"):
    resident: Id
    duration: Duration = "15m"  # on the floor until help comes


class Sos(_Incident, kw_only=True, frozen=True, tag="sos"):
    resident: Id
    duration: Duration = "5m"


class MissedRoutine(_Incident, kw_only=True, frozen=True, tag="missed_routine"):
    """The resident does not get up: stays in bed, no motion, from ``at`` on. Put ``at`` at
    or before the resident's usual wake time: a "not up by" check alarms an hour after it
    (rules/presets/elder-care.yaml), so ``latest_after`` must leave that hour and more."""

    resident: Id
    duration: Duration = "3h"
    latest_after: Duration = "2h"  # inactivity alert at most this long after ``at``


class NightWandering(_Incident, kw_only=True, frozen=True, tag="night_wandering"):
    resident: Id
    duration: Duration = "20m"


class LockerForced(_Incident, kw_only=True, frozen=True, tag="locker_forced"):
    device: Id
    door: Annotated[int, Meta(ge=1, le=8)] = 1
    duration: Duration = "2m"


class PinBruteForce(_Incident, kw_only=True, frozen=True, tag="pin_brute_force"):
    device: Id
    attempts_per_min: Annotated[float, Meta(gt=0, le=60)] = 6.0
    duration: Duration = "5m"


class ChilledWarming(_Incident, kw_only=True, frozen=True, tag="chilled_warming"):
    device: Id
    door: Annotated[int, Meta(ge=1, le=8)] = 1
    peak_c: Annotated[float, Meta(gt=8, le=40)] = 15.0
    duration: Duration = "45m"


class PumpCavitation(_Incident, kw_only=True, frozen=True, tag="pump_cavitation"):
    device: Id
    severity: Annotated[float, Meta(gt=0, le=1)] = 1.0
    ramp: Duration = "5m"
    duration: Duration = "20m"


class Cooking(_Incident, kw_only=True, frozen=True, tag="cooking"):
    """Heavy cooking (a wok on high): CO, smoke and heat nudged up, and no alarm is correct."""

    unit: Name
    duration: Duration = "20m"


IncidentSpec = (
    GasLeak
    | CarbonMonoxide
    | KitchenFire
    | ElectricalFault
    | Flood
    | Fall
    | Sos
    | MissedRoutine
    | NightWandering
    | LockerForced
    | PinBruteForce
    | ChilledWarming
    | PumpCavitation
    | Cooking
)

FaultKind = Literal[
    "dropout",
    "stuck",
    "noise_burst",
    "drift",
    "dead_battery",
    "duplicate",
    "reorder",
    "delay",
    "clock_skew",
    "malformed",
]


class FaultSpec(_Strict, kw_only=True, frozen=True):
    """A device fault from ``at`` for ``duration`` (default: to the end).

    ``device`` names one device; ``kind`` instead picks every device of a family and
    ``share`` of them (seeded). ``rate`` is the share of readings affected (duplicate,
    reorder, malformed); ``magnitude`` scales noise, drift (per hour, as a share of the
    metric's range), delay and skew (seconds).
    """

    fault: FaultKind
    at: Duration = 0.0
    duration: Duration | None = None
    device: Id | None = None
    kind: DeviceKind | None = None
    share: Rate = 1.0
    rate: Rate = 1.0
    magnitude: float | None = None

    def __post_init__(self) -> None:
        if (self.device is None) == (self.kind is None):
            raise ValueError("a fault needs exactly one of 'device' or 'kind'")


class Scenario(_Strict, kw_only=True, frozen=True):
    name: Id
    start: Annotated[datetime, Meta(tz=True)] = datetime(2025, 3, 3, 6, 30, tzinfo=UTC)
    duration: Duration = "1h"
    utc_offset_h: Annotated[float, Meta(ge=-12, le=14)] = 8.0
    seed: int = 7
    templates: dict[Name, Template] = {}
    sites: Annotated[list[SiteSpec], Meta(min_length=1)]
    incidents: list[IncidentSpec] = []
    faults: list[FaultSpec] = []


# The strict loader (file:line errors), after rules/config.py.

_PATH_PART = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+|\.\.\.)\]")


def _walk(
    node: yaml.Node | None, path: str, key: str | None = None
) -> tuple[yaml.Node | None, yaml.Node | None]:
    """Follow a msgspec error path through the YAML nodes: (deepest found, the exact one).

    msgspec writes ``[...]`` for a mapping's key it does not name (a template's name); every
    key is tried, preferring the one whose node holds ``key`` (an unknown key's name)."""
    parts = _PATH_PART.findall(path.removeprefix("$"))
    return _follow(node, parts, key)


def _follow(
    node: yaml.Node | None, parts: list[tuple[str, str]], key: str | None
) -> tuple[yaml.Node | None, yaml.Node | None]:
    best = node
    for n, (name, index) in enumerate(parts):
        nxt: yaml.Node | None = None
        if index == "..." and isinstance(node, yaml.MappingNode):
            found = [_follow(v, parts[n + 1 :], key) for _, v in node.value]
            for deepest, exact in found:
                if exact is not None and (key is None or _holds(exact, key)):
                    return deepest, exact
            return (found[0][0] if found else best), None
        if name and isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == name), None)
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            nxt = node.value[int(index)]
        if nxt is None:
            return best, None
        node = best = nxt
    return best, node


def _holds(node: yaml.Node, key: str) -> bool:
    return isinstance(node, yaml.MappingNode) and any(
        getattr(k, "value", None) == key for k, _ in node.value
    )


def _line(node: yaml.Node | None) -> int | None:
    return None if node is None else int(node.start_mark.line) + 1


def load_yaml(text: str, model: type[T], source: str) -> T:
    """Parse ``text`` as YAML into ``model`` (msgspec Structs with forbid_unknown_fields)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ScenarioError(source, line, "", f"not valid YAML: {exc.problem}") from exc
    if data is None:
        data = {}
    try:
        return msgspec.convert(data, model, strict=True)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `")
        where = where.rstrip("`") or "$"
        unknown = re.search(r"unknown field `([^`]+)`", problem)
        best, exact = _walk(root, where, unknown.group(1) if unknown else None)
        line = _line(best)
        if unknown:
            key = unknown.group(1)
            if isinstance(exact, yaml.MappingNode):
                line = next(
                    (_line(k) for k, _ in exact.value if getattr(k, "value", None) == key), line
                )
            problem = f"unknown key {key!r} (check its spelling; see docs/simulator.md)"
        raise ScenarioError(source, line, where, problem) from exc


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), None, "", f"cannot read the file: {exc.strerror}") from exc
    return load_yaml(text, Scenario, str(path))


SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


def sample_path(name: str = "sample-community") -> Path:
    """A scenario shipped in firmware-sim/scenarios/."""
    return SCENARIO_DIR / f"{name}.yaml"
