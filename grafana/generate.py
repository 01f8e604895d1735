# ruff: noqa: S608  (queries are built from this file's own constants, never from input)
"""Generate Anmin's Grafana dashboards (grafana/dashboards/*.json) with grafana-foundation-sdk.

Run ``python grafana/generate.py`` (or ``anmin grafana generate``) after changing this file and
commit the JSON; ``--check`` exits 1 if the committed JSON differs from what this file makes.

Every query is InfluxQL over what the edge agent's telemetry writes (edge/telemetry.py):
``sensor`` (tags site, gateway, building, unit, device, kind, metric; fields min, max, mean,
last, count), ``gateway`` (tags site, gateway; the agent's counters and gauges as floats) and
``alert`` (tags site, gateway, building, unit, device, kind, severity, phase; fields message,
id). InfluxQL works with InfluxDB 1.x, 2.x through a DBRP mapping, and 3.x.

The SDK has no InfluxDB query type for this Grafana version, so ``InfluxQL`` below is one (the
JSON is what Grafana's InfluxDB data source stores for a raw InfluxQL query). Each query is
registered with the shape its result must have: tests/integration/test_grafana.py runs every
one against a real influxd filled through the edge agent and checks it.

This folder is provisioning, not a package (DESIGN.md): the script imports only the SDK and
the standard library; the thresholds drawn are the shipped presets' (rules/presets/*.yaml),
which tests/unit/test_grafana.py checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

# The Grafana version the SDK is pinned to (pyproject: grafana-foundation-sdk==1769699379!11.6.0).
GRAFANA_VERSION = "11.6"
HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"
DATASOURCE_UID = "anmin-influxdb"  # provisioning/datasources/anmin.yaml
DATASOURCE = model.DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)
FOLDER_TAG = "anmin"

# Alert kinds (rules/presets/*.yaml), grouped the way the dashboards show them.
LIFE_SAFETY_KINDS = ("gas", "co", "smoke", "heat", "fire", "electrical", "flood")
WELFARE_KINDS = ("sos", "fall", "vital_signs", "inactivity", "night_wandering", "not_back_home")
LOCKER_KINDS = (
    "locker_door_ajar",
    "locker_forced",
    "pin_brute_force",
    "locker_chilled",
    "locker_parcel_overdue",
)
PUMP_KINDS = ("pump_anomaly",)

# Thresholds drawn on the panels: the presets' alarm levels (checked by a unit test).
GAS_LEL_SEVERE = 10.0  # gas.yaml: Severe at 10 %LEL held 5 s
GAS_LEL_EXTREME = 25.0  # gas.yaml: Extreme at 25 %LEL held 2 s (closes the valve)
CO_PPM_CLEAR = 30.0  # co-en50291.yaml: clears below 30 ppm (Severe comes from the dose model)
CO_PPM_EXTREME = 250.0  # co-en50291.yaml: Extreme at 250 ppm held 60 s
SMOKE_OBS_SEVERE = 3.0  # smoke.yaml: 3 %/m held 10 s
HEAT_STATIC_C = 58.0  # heat-a1r.yaml: static element of EN 54-5 class A1R
CHILLED_LOW_C = 0.0  # lockers.yaml: chilled compartments 0-8 °C
CHILLED_HIGH_C = 8.0
VIBRATION_ZONE_C = 2.8  # ISO 10816-3: zone B/C boundary (drawn for reference)
PUMP_SCORE_ALERT = 0.5  # pump.yaml: the detector score that raises the pump alert
VIBRATION_ZONE_D = 4.5  # pump.yaml / ISO 10816-3: zone C/D boundary (alert raised at)

GREEN, YELLOW, ORANGE, RED = "green", "yellow", "orange", "red"

# What a result must look like. Column patterns are regular expressions over the column names
# InfluxDB returns (besides "time"); each names the type of its values.
ColumnType = Literal["number", "text"]


@dataclass(frozen=True, slots=True)
class Shape:
    columns: dict[str, ColumnType]
    tags: tuple[str, ...] = ()  # every series carries these tags (its GROUP BY)
    may_be_empty: str | None = None  # why a short test run may leave it empty


@dataclass(frozen=True, slots=True)
class QuerySpec:
    dashboard: str  # the dashboard's uid
    panel: str  # panel title, "annotation: NAME" or "variable: NAME"
    ref_id: str
    query: str
    shape: Shape


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target, as Grafana's InfluxDB data source stores it."""

    def __init__(self, ref_id: str, query: str, result_format: str, alias: str | None) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": DATASOURCE.to_json(),
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(
        self,
        ref_id: str,
        query: str,
        *,
        result_format: Literal["time_series", "table"] = "time_series",
        alias: str | None = None,
    ) -> None:
        self._internal = InfluxQLQuery(ref_id, query, result_format, alias)

    def build(self) -> cogvariants.Dataquery:
        return self._internal


class InfluxAnnotationQuery(model.AnnotationQuery):
    """An InfluxQL annotation: Grafana reads ``query`` and the column roles from the root (the
    form every Grafana version understands) and migrates them into ``target`` itself."""

    def __init__(self, name: str, query: str, icon_color: str, tags_column: str) -> None:
        super().__init__(name=name, datasource=DATASOURCE, enable=True, icon_color=icon_color)
        self.query = query
        self.tags_column = tags_column

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload |= {
            "query": self.query,
            "textColumn": "message",
            "tagsColumn": self.tags_column,
            "titleColumn": "kind",
        }
        return payload


class InfluxAnnotation(cogbuilder.Builder[model.AnnotationQuery]):
    def __init__(self, name: str, query: str, icon_color: str, tags_column: str) -> None:
        self._internal = InfluxAnnotationQuery(name, query, icon_color, tags_column)

    def build(self) -> model.AnnotationQuery:
        return self._internal


# -- query text ---------------------------------------------------------------------------------

WHERE_PLACE = '"site" =~ /^$site$/ AND "building" =~ /^$building$/'
WHERE_GATEWAY = '"site" =~ /^$site$/ AND "gateway" =~ /^$gateway$/'


def regex(values: Sequence[str]) -> str:
    return "/^(" + "|".join(values) + ")$/"


def sensor(select: str, where: str, group: str = "", *, by_time: bool = True) -> str:
    """A query over ``sensor`` in the chosen site and buildings and the time range."""
    groups = (["time($__interval)"] if by_time else []) + ([group] if group else [])
    text = f'SELECT {select} FROM "sensor" WHERE {WHERE_PLACE} AND {where} AND $timeFilter'
    if groups:
        text += " GROUP BY " + ", ".join(groups)
    return text + (" fill(none)" if by_time else "")


def gateway(select: str, *, by_time: bool = True, where: str = "$timeFilter") -> str:
    groups = ["time($__interval)", '"gateway"'] if by_time else ['"gateway"']
    text = f'SELECT {select} FROM "gateway" WHERE {WHERE_GATEWAY} AND {where}'
    return text + " GROUP BY " + ", ".join(groups) + (" fill(none)" if by_time else "")


def open_alerts(select: str, kinds: Sequence[str] | None, group: str = "") -> str:
    """Alert series (building, device, kind) whose last event is not a clearing one."""
    kind = f' AND "kind" =~ {regex(kinds)}' if kinds else ""
    inner = (
        'SELECT last("message") AS "message", "phase", "severity", "unit" FROM "alert"'
        f" WHERE {WHERE_PLACE}{kind} AND $timeFilter"
        ' GROUP BY "building", "device", "kind"'
    )
    text = f"SELECT {select} FROM ({inner}) WHERE \"phase\" != 'cleared'"
    return text + (f" GROUP BY {group}" if group else "")


def alert_events(kinds: Sequence[str] | None, *, with_device: bool = True) -> str:
    kind = f' AND "kind" =~ {regex(kinds)}' if kinds else ""
    columns = '"message", "kind", "severity", "phase", "building"'
    if with_device:
        columns += ', "device"'
    return f'SELECT {columns} FROM "alert" WHERE {WHERE_PLACE}{kind} AND $timeFilter'


# -- building blocks ----------------------------------------------------------------------------


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def drawn(mode: common.GraphThresholdsStyleMode) -> common_builders.GraphThresholdsStyleConfig:
    return common_builders.GraphThresholdsStyleConfig().mode(mode)


def last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def legend_table() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["max", "lastNotNull"])
    )


SEVERITY_COLOURS = model.ValueMap(
    options={
        "Minor": model.ValueMappingResult(color="blue", index=0),
        "Moderate": model.ValueMappingResult(color=YELLOW, index=1),
        "Severe": model.ValueMappingResult(color=ORANGE, index=2),
        "Extreme": model.ValueMappingResult(color=RED, index=3),
    }
)
OPEN_CLOSED = model.ValueMap(
    options={
        "0": model.ValueMappingResult(text="closed", color=GREEN, index=0),
        "1": model.ValueMappingResult(text="open", color=ORANGE, index=1),
    }
)


Panel = timeseries.Panel | stat.Panel | table.Panel | bargauge.Panel


@dataclass
class Board:
    """One dashboard being built, with the queries it registers."""

    uid: str
    title: str
    description: str
    kinds: Sequence[str] | None  # alert kinds for its annotations (None: every kind)
    variables: Sequence[str] = ("site", "building")
    annotation_device: bool = True
    annotation_may_be_empty: str | None = None
    specs: list[QuerySpec] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    _ids: int = 0

    def target(
        self,
        panel: str,
        query: str,
        shape: Shape,
        *,
        ref_id: str = "A",
        result_format: Literal["time_series", "table"] = "time_series",
        alias: str | None = None,
    ) -> InfluxQL:
        self.specs.append(QuerySpec(self.uid, panel, ref_id, query, shape))
        return InfluxQL(ref_id, query, result_format=result_format, alias=alias)

    def add(self, panel: Panel) -> None:
        self._ids += 1
        self.panels.append(panel.id(self._ids))

    def build(self) -> model.Dashboard:
        board = (
            dash.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags([FOLDER_TAG])
            .editable()
            .timezone("browser")
            .time("now-6h", "now")
            .refresh("30s")
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
        )
        for name in self.variables:
            board = board.with_variable(self._variable(name))
        kinds_query = alert_events(self.kinds, with_device=self.annotation_device)
        tags_column = "kind,severity,phase" + (",device" if self.annotation_device else "")
        self.specs.append(
            QuerySpec(
                self.uid,
                "annotation: alerts",
                "annotation",
                kinds_query,
                Shape(
                    {
                        "message": "text",
                        "kind": "text",
                        "severity": "text",
                        "phase": "text",
                        "building": "text",
                        **({"device": "text"} if self.annotation_device else {}),
                    },
                    may_be_empty=self.annotation_may_be_empty,
                ),
            )
        )
        board = board.annotation(InfluxAnnotation("Alerts", kinds_query, RED, tags_column))
        for panel in self.panels:
            board = board.with_panel(panel)
        return board.build()

    def _variable(self, name: str) -> dash.QueryVariable:
        queries = {
            "site": 'SHOW TAG VALUES FROM "sensor" WITH KEY = "site"',
            "building": (
                'SHOW TAG VALUES FROM "sensor" WITH KEY = "building" WHERE "site" =~ /^$site$/'
            ),
            "gateway": (
                'SHOW TAG VALUES FROM "sensor" WITH KEY = "gateway" WHERE "site" =~ /^$site$/'
                ' AND "building" =~ /^$building$/'
            ),
            "unit": (
                'SHOW TAG VALUES FROM "sensor" WITH KEY = "unit" WHERE "site" =~ /^$site$/'
                f' AND "building" =~ /^$building$/ AND "kind" =~ {regex(GAS_FIRE_DEVICES)}'
            ),
        }
        labels = {"site": "Site", "building": "Building", "gateway": "Gateway", "unit": "Unit"}
        query = queries[name]
        self.specs.append(
            QuerySpec(
                self.uid, f"variable: {name}", name, query, Shape({"key": "text", "value": "text"})
            )
        )
        variable = (
            dash.QueryVariable(name)
            .label(labels[name])
            .datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
        if name == "gateway":
            # The gateway series carry no building tag: the building's gateways are found
            # through the sensor series, and the variable follows the building silently.
            variable = variable.hide(model.VariableHide.HIDE_VARIABLE)
        return variable


GAS_FIRE_DEVICES = ("gas", "co", "smoke", "heat")


def series_panel(
    board: Board,
    title: str,
    description: str,
    query: str,
    shape: Shape,
    *,
    unit: str,
    alias: str,
    steps: Sequence[tuple[float | None, str]] = ((None, GREEN),),
    draw: common.GraphThresholdsStyleMode = common.GraphThresholdsStyleMode.OFF,
    width: int = 12,
    interpolation: common.LineInterpolation = common.LineInterpolation.LINEAR,
    minimum: float | None = None,
) -> None:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(board.target(title, query, shape, alias=alias))
        .unit(unit)
        .thresholds(thresholds(*steps))
        .thresholds_style(drawn(draw))
        .line_interpolation(interpolation)
        .legend(legend_table())
        .span(width)
        .height(8)
    )
    if minimum is not None:
        panel = panel.min(minimum)
    board.add(panel)


def stat_panel(
    board: Board,
    title: str,
    description: str,
    query: str,
    shape: Shape,
    *,
    unit: str = "none",
    alias: str | None = None,
    steps: Sequence[tuple[float | None, str]] = ((None, GREEN),),
    width: int = 6,
) -> None:
    board.add(
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(board.target(title, query, shape, alias=alias))
        .unit(unit)
        .reduce_options(last_value())
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .span(width)
        .height(5)
    )


def table_panel(
    board: Board,
    title: str,
    description: str,
    query: str,
    shape: Shape,
    *,
    width: int = 12,
    mappings: Sequence[model.ValueMapping] = (),
) -> None:
    board.add(
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(board.target(title, query, shape, result_format="table"))
        .mappings(list(mappings))
        .span(width)
        .height(8)
    )


def bars_panel(
    board: Board,
    title: str,
    description: str,
    query: str,
    shape: Shape,
    *,
    alias: str,
    unit: str = "none",
    steps: Sequence[tuple[float | None, str]] = ((None, GREEN),),
    width: int = 12,
) -> None:
    board.add(
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(board.target(title, query, shape, alias=alias))
        .unit(unit)
        .reduce_options(last_value())
        .thresholds(thresholds(*steps))
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .span(width)
        .height(8)
    )


def number(name: str) -> dict[str, ColumnType]:
    return {name: "number"}


# -- the dashboards -----------------------------------------------------------------------------


def overview() -> Board:
    b = Board(
        "anmin-overview",
        "Anmin · Community overview",
        "Each building's state at a glance: open alerts, gateways reporting, devices gone silent.",
        kinds=None,
        variables=("site", "building", "gateway"),
    )
    open_by_building = open_alerts('count("message") AS "open"', None, '"building"')
    bars_panel(
        b,
        "Open alerts by building",
        "Alert series (building, device, kind) whose last event in the time range is raised or"
        " updated. A building with none is green.",
        open_by_building,
        Shape(number("open"), tags=("building",)),
        alias="$tag_building",
        steps=((None, GREEN), (1, RED)),
        width=8,
    )
    stat_panel(
        b,
        "Gateways reporting",
        "Gateways whose health point arrived within the last 2 minutes.",
        'SELECT count("up") AS "gateways" FROM (SELECT last("uptime_s") AS "up" FROM "gateway"'
        f' WHERE {WHERE_GATEWAY} AND time > now() - 2m GROUP BY "gateway")',
        Shape(number("gateways")),
        steps=((None, RED), (1, GREEN)),
        width=4,
    )
    stat_panel(
        b,
        "Devices offline",
        "Devices each gateway has marked offline: silent for 3 reporting intervals, or a last"
        " will / offline status.",
        gateway('last("devices_offline") AS "offline"', by_time=False),
        Shape(number("offline"), tags=("gateway",)),
        alias="$tag_gateway",
        steps=((None, GREEN), (1, ORANGE)),
        width=6,
    )
    stat_panel(
        b,
        "Devices online",
        "Devices each gateway has heard from recently.",
        gateway('last("devices_online") AS "online"', by_time=False),
        Shape(number("online"), tags=("gateway",)),
        alias="$tag_gateway",
        width=6,
    )
    table_panel(
        b,
        "Open alerts",
        "Every alert still open, newest first. Incidents (the hub's grouping and"
        " acknowledgements) are in the web console.",
        open_alerts('"building", "unit", "device", "kind", "severity", "phase", "message"', None),
        Shape(
            {
                "building": "text",
                "unit": "text",
                "device": "text",
                "kind": "text",
                "severity": "text",
                "phase": "text",
                "message": "text",
            }
        ),
        mappings=[SEVERITY_COLOURS],
        width=14,
    )
    table_panel(
        b,
        "Least recently heard devices",
        "When each device's last reading arrived: silent devices sort to the top.",
        f'SELECT last("count") AS "readings" FROM "sensor" WHERE {WHERE_PLACE}'
        ' AND time > now() - 1d GROUP BY "building", "kind", "device"',
        Shape(number("readings"), tags=("building", "kind", "device")),
        width=10,
    )
    return b


def gas_and_fire() -> Board:
    b = Board(
        "anmin-gas-fire",
        "Anmin · Gas and fire",
        "Combustible gas, carbon monoxide, smoke and heat per building and unit, with the"
        " alarm levels of the shipped rules drawn.",
        kinds=LIFE_SAFETY_KINDS,
        variables=("site", "building", "unit"),
    )
    per_unit = '"building", "unit"'
    alias = "$tag_building/$tag_unit"

    def where(kind: str, metric: str) -> str:
        return f'"kind" = \'{kind}\' AND "metric" = \'{metric}\' AND "unit" =~ /^$unit$/'

    shape = Shape(number("max"), tags=("building", "unit"))
    series_panel(
        b,
        "Combustible gas (%LEL)",
        f"Highest reading per window. Severe at {GAS_LEL_SEVERE:g} %LEL, Extreme (valve closes)"
        f" at {GAS_LEL_EXTREME:g} %LEL (rules/presets/gas.yaml).",
        sensor('max("max") AS "max"', where("gas", "gas_lel"), per_unit),
        shape,
        unit="percent",
        alias=alias,
        steps=((None, GREEN), (GAS_LEL_SEVERE, ORANGE), (GAS_LEL_EXTREME, RED)),
        draw=common.GraphThresholdsStyleMode.LINE_AND_AREA,
        minimum=0,
    )
    series_panel(
        b,
        "Carbon monoxide (ppm)",
        f"Highest reading per window. Extreme at {CO_PPM_EXTREME:g} ppm held 60 s; the Severe"
        " alarm comes from the modelled COHb dose, not a level (docs/co-model.md); clears"
        f" below {CO_PPM_CLEAR:g} ppm.",
        sensor('max("max") AS "max"', where("co", "co_ppm"), per_unit),
        shape,
        unit="ppm",
        alias=alias,
        steps=((None, GREEN), (CO_PPM_CLEAR, YELLOW), (CO_PPM_EXTREME, RED)),
        draw=common.GraphThresholdsStyleMode.DASHED,
        minimum=0,
    )
    series_panel(
        b,
        "Smoke obscuration (%/m)",
        f"Highest reading per window. Smoke alarm at {SMOKE_OBS_SEVERE:g} %/m held 10 s; fire"
        " is confirmed by smoke plus heat or CO rise in the same unit.",
        sensor('max("max") AS "max"', where("smoke", "smoke_obs"), per_unit),
        shape,
        unit="none",
        alias=alias,
        steps=((None, GREEN), (SMOKE_OBS_SEVERE, RED)),
        draw=common.GraphThresholdsStyleMode.LINE_AND_AREA,
        minimum=0,
    )
    series_panel(
        b,
        "Heat (°C)",
        f"Highest reading per window. Static element at {HEAT_STATIC_C:g} °C (EN 54-5 A1R);"
        " the rate-of-rise element (8 °C/min) is in the annotations.",
        sensor('max("max") AS "max"', where("heat", "temp_c"), per_unit),
        shape,
        unit="celsius",
        alias=alias,
        steps=((None, GREEN), (HEAT_STATIC_C, RED)),
        draw=common.GraphThresholdsStyleMode.LINE_AND_AREA,
    )
    table_panel(
        b,
        "Open life-safety alerts",
        "Gas, CO, smoke, heat, fire, electrical and flood alerts still open.",
        open_alerts('"building", "unit", "kind", "severity", "message"', LIFE_SAFETY_KINDS),
        Shape(
            {
                "building": "text",
                "unit": "text",
                "kind": "text",
                "severity": "text",
                "message": "text",
            }
        ),
        mappings=[SEVERITY_COLOURS],
        width=24,
    )
    return b


def elder_care() -> Board:
    b = Board(
        "anmin-elder-care",
        "Anmin · Elder care (aggregated)",
        "Activity, welfare alerts and wearable batteries per building, never per person:"
        " families see their own relative in the app, not here. The gateways write elder-care"
        " series only as a building's count and mean, and only when at least k (3) devices"
        " reported in a window (edge/telemetry.py); a building with fewer shows nothing.",
        kinds=WELFARE_KINDS,
        annotation_device=False,
    )
    bars_panel(
        b,
        "Open welfare alerts",
        "SOS, falls, vital signs, inactivity, night wandering and not back home, counted per"
        " building and kind. Who it is stays with the family and the committee's console.",
        open_alerts('count("message") AS "open"', WELFARE_KINDS, '"building", "kind"'),
        Shape(number("open"), tags=("building", "kind")),
        alias="$tag_building $tag_kind",
        steps=((None, GREEN), (1, RED)),
    )
    series_panel(
        b,
        "Activity by hour",
        "Share of motion-sensor readings with motion, over every flat of a building, per"
        " hour (the mean of the building's k-anonymous motion series).",
        'SELECT mean("mean") AS "active" FROM "sensor" WHERE '
        f"{WHERE_PLACE} AND \"kind\" = 'pir' AND \"metric\" = 'motion' AND $timeFilter"
        ' GROUP BY time(1h), "building" fill(none)',
        Shape(number("active"), tags=("building",)),
        unit="percentunit",
        alias="$tag_building",
        minimum=0,
    )
    series_panel(
        b,
        "Wearable batteries",
        "Mean battery charge of the building's wearables (one device's own level is not"
        " written: it is elder-care telemetry). A wearable below 15 % raises a device battery"
        " alert of its own (rules/presets/device-health.yaml).",
        sensor(
            'mean("mean") AS "mean"',
            "\"kind\" = 'wearable' AND \"metric\" = 'battery_pct'",
            '"building"',
        ),
        Shape({"mean": "number"}, tags=("building",)),
        unit="percent",
        alias="$tag_building $col",
        steps=((None, RED), (15, ORANGE), (30, GREEN)),
        draw=common.GraphThresholdsStyleMode.DASHED,
        width=24,
        minimum=0,
    )
    return b


def lockers() -> Board:
    b = Board(
        "anmin-lockers",
        "Anmin · Parcel lockers",
        "Door states, tamper and failed PINs, chilled compartment temperatures.",
        kinds=LOCKER_KINDS,
    )
    series_panel(
        b,
        "Doors open",
        "Whether each door was open in a window (1 open, 0 closed).",
        sensor(
            'max("max") AS "open"',
            '"kind" = \'locker\' AND "metric" =~ /^door_[0-9]+_open$/',
            '"building", "device", "metric"',
        ),
        Shape(number("open"), tags=("building", "device", "metric")),
        unit="none",
        alias="$tag_device $tag_metric",
        interpolation=common.LineInterpolation.STEP_AFTER,
        width=24,
    )
    series_panel(
        b,
        "Tamper and failed PINs",
        "Tamper switch (1 tripped) and failed PIN attempts per window. Forced doors and PIN"
        " brute force (5 in 10 min) raise alerts: see the annotations.",
        sensor(
            'max("max") AS "value"',
            '"kind" = \'locker\' AND "metric" =~ /^(tamper|pin_failures)$/',
            '"building", "device", "metric"',
        ),
        Shape(number("value"), tags=("building", "device", "metric")),
        unit="none",
        alias="$tag_device $tag_metric",
        steps=((None, GREEN), (1, RED)),
        draw=common.GraphThresholdsStyleMode.DASHED,
        interpolation=common.LineInterpolation.STEP_AFTER,
    )
    series_panel(
        b,
        "Chilled compartments (°C)",
        f"Mean temperature of each chilled door; {CHILLED_LOW_C:g}-{CHILLED_HIGH_C:g} °C for"
        " 5 min or more outside raises an alert (rules/presets/lockers.yaml).",
        sensor(
            'mean("mean") AS "temp"',
            '"kind" = \'locker\' AND "metric" =~ /^door_[0-9]+_temp_c$/',
            '"building", "device", "metric"',
        ),
        Shape(number("temp"), tags=("building", "device", "metric")),
        unit="celsius",
        alias="$tag_device $tag_metric",
        steps=((None, "blue"), (CHILLED_LOW_C, GREEN), (CHILLED_HIGH_C, RED)),
        draw=common.GraphThresholdsStyleMode.LINE_AND_AREA,
    )
    table_panel(
        b,
        "Locker alerts in range",
        "Forced doors, PIN brute force, doors ajar, chilled out of range, overdue parcels.",
        f'SELECT "building", "device", "kind", "severity", "phase", "message" FROM "alert"'
        f' WHERE {WHERE_PLACE} AND "kind" =~ {regex(LOCKER_KINDS)} AND $timeFilter',
        Shape(
            {
                "building": "text",
                "device": "text",
                "kind": "text",
                "severity": "text",
                "phase": "text",
                "message": "text",
            }
        ),
        mappings=[SEVERITY_COLOURS],
        width=24,
    )
    return b


PUMP_CHANNELS = (
    ("motor_current_a", "Motor current (A)", "amp"),
    ("pressure_bar", "Outlet pressure (bar)", "pressurebar"),
    ("flow_m3h", "Flow (m³/h)", "none"),
    ("temp_c", "Motor temperature (°C)", "celsius"),
)


def pump_room() -> Board:
    b = Board(
        "anmin-pump-room",
        "Anmin · Pump room",
        "The booster pumps' anomaly scores beside their raw channels and the 5-minute vibration"
        " mean against ISO 10816-3's zones: the two things the pump rule alarms on.",
        kinds=PUMP_KINDS,
        annotation_may_be_empty="the pump rule needs a 5-minute mean of gateway time",
    )
    pump = "\"kind\" = 'pump'"
    series_panel(
        b,
        "Anomaly score (0-1)",
        f"The pump detector's score, highest per window: {PUMP_SCORE_ALERT:g} or more, held,"
        " raises the pump alert (rules/presets/pump.yaml; docs/detection.md).",
        sensor('max("max") AS "score"', f"{pump} AND \"metric\" = 'score_pump'", '"device"'),
        Shape(number("score"), tags=("device",)),
        unit="none",
        alias="$tag_device",
        steps=((None, GREEN), (PUMP_SCORE_ALERT, RED)),
        draw=common.GraphThresholdsStyleMode.LINE_AND_AREA,
        minimum=0,
    )
    series_panel(
        b,
        "Condition: vibration, 5-min mean (mm/s)",
        f"ISO 10816-3 zones: above {VIBRATION_ZONE_C:g} mm/s unsatisfactory for long-term"
        f" operation, above {VIBRATION_ZONE_D:g} mm/s may cause damage (the alert).",
        'SELECT mean("mean") AS "vibration" FROM "sensor" WHERE '
        f"{WHERE_PLACE} AND {pump} AND \"metric\" = 'vibration_mm_s' AND $timeFilter"
        ' GROUP BY time(5m), "device" fill(none)',
        Shape(number("vibration"), tags=("device",)),
        unit="velocitymms",
        alias="$tag_device",
        steps=((None, GREEN), (VIBRATION_ZONE_C, ORANGE), (VIBRATION_ZONE_D, RED)),
        draw=common.GraphThresholdsStyleMode.LINE_AND_AREA,
        minimum=0,
    )
    series_panel(
        b,
        "Vibration, raw (mm/s)",
        "Lowest, mean and highest RMS vibration velocity per window.",
        sensor(
            'min("min") AS "min", mean("mean") AS "mean", max("max") AS "max"',
            f"{pump} AND \"metric\" = 'vibration_mm_s'",
            '"device"',
        ),
        Shape({"min": "number", "mean": "number", "max": "number"}, tags=("device",)),
        unit="velocitymms",
        alias="$tag_device $col",
        steps=((None, GREEN), (VIBRATION_ZONE_C, ORANGE), (VIBRATION_ZONE_D, RED)),
        draw=common.GraphThresholdsStyleMode.DASHED,
        minimum=0,
    )
    for metric, title, unit in PUMP_CHANNELS:
        series_panel(
            b,
            title,
            f"Mean of {metric} per window.",
            sensor('mean("mean") AS "mean"', f"{pump} AND \"metric\" = '{metric}'", '"device"'),
            Shape(number("mean"), tags=("device",)),
            unit=unit,
            alias="$tag_device",
        )
    return b


def system_health() -> Board:
    b = Board(
        "anmin-system-health",
        "Anmin · System health",
        "The gateways themselves: uptime, readings per second, rejected input by reason, the"
        " outbox waiting for the hub and how late the uplink is.",
        kinds=None,
        variables=("site", "building", "gateway"),
    )
    stat_panel(
        b,
        "Uptime",
        "Seconds since each gateway's agent started; a drop is a restart.",
        gateway('last("uptime_s") AS "uptime"', by_time=False),
        Shape(number("uptime"), tags=("gateway",)),
        unit="s",
        alias="$tag_gateway",
        width=8,
    )
    stat_panel(
        b,
        "Outbox depth now",
        "Alerts written at the edge and not yet acknowledged by the hub.",
        gateway('last("outbox_depth") AS "depth"', by_time=False),
        Shape(number("depth"), tags=("gateway",)),
        alias="$tag_gateway",
        steps=((None, GREEN), (10, ORANGE), (100, RED)),
        width=8,
    )
    stat_panel(
        b,
        "Uplink lag now",
        "Age of the oldest alert the hub has not acknowledged.",
        gateway('last("uplink_lag_s") AS "lag"', by_time=False),
        Shape(number("lag"), tags=("gateway",)),
        unit="s",
        alias="$tag_gateway",
        steps=((None, GREEN), (15, ORANGE), (60, RED)),
        width=8,
    )
    series_panel(
        b,
        "Readings per second",
        "Readings accepted per second (the agent's counter, differentiated; restarts handled).",
        gateway('non_negative_derivative(last("readings"), 1s) AS "readings_per_s"'),
        Shape(number("readings_per_s"), tags=("gateway",)),
        unit="reqps",
        alias="$tag_gateway",
        minimum=0,
    )
    series_panel(
        b,
        "Rejected input by reason",
        "Rejected messages per window, one series per reason (malformed, unknown device, bad"
        " topic, too old, ...). Each also went out as a dead letter.",
        gateway("non_negative_difference(last(/^rejected_/))"),
        Shape({"^non_negative_difference_rejected_.+$": "number"}, tags=("gateway",)),
        unit="none",
        alias="$tag_gateway $col",
        steps=((None, GREEN), (1, ORANGE)),
        minimum=0,
    )
    series_panel(
        b,
        "Outbox depth",
        "Alerts waiting for the hub's acknowledgement.",
        gateway('max("outbox_depth") AS "depth"'),
        Shape(number("depth"), tags=("gateway",)),
        unit="none",
        alias="$tag_gateway",
        steps=((None, GREEN), (10, ORANGE), (100, RED)),
        draw=common.GraphThresholdsStyleMode.DASHED,
        minimum=0,
    )
    series_panel(
        b,
        "Uplink lag (s)",
        "Age of the oldest unacknowledged alert: it grows while the hub is unreachable.",
        gateway('max("uplink_lag_s") AS "lag"'),
        Shape(number("lag"), tags=("gateway",)),
        unit="s",
        alias="$tag_gateway",
        steps=((None, GREEN), (15, ORANGE), (60, RED)),
        draw=common.GraphThresholdsStyleMode.DASHED,
        minimum=0,
    )
    series_panel(
        b,
        "Devices online and offline",
        "The gateway's view of its devices (offline: silent for 3 intervals or a last will).",
        gateway('last("devices_online") AS "online", last("devices_offline") AS "offline"'),
        Shape({"online": "number", "offline": "number"}, tags=("gateway",)),
        unit="none",
        alias="$tag_gateway $col",
        minimum=0,
    )
    return b


BOARDS = (overview, gas_and_fire, elder_care, lockers, pump_room, system_health)


def build() -> tuple[dict[str, model.Dashboard], list[QuerySpec]]:
    """Every dashboard (file name -> dashboard) and every query they contain."""
    dashboards: dict[str, model.Dashboard] = {}
    specs: list[QuerySpec] = []
    for make in BOARDS:
        board = make()
        dashboards[f"{board.uid}.json"] = board.build()
        specs.extend(board.specs)
    return dashboards, specs


def render(built: model.Dashboard) -> str:
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name -> the JSON text to commit."""
    dashboards, _ = build()
    return {name: render(d) for name, d in dashboards.items()}


def write(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of dashboards whose committed JSON differs from what this file makes (or extra
    JSON files nothing makes any more)."""
    expected = rendered()
    out = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    out += sorted(p.name for p in directory.glob("*.json") if p.name not in expected)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="where to write")
    args = parser.parse_args(argv)
    if args.check:
        names = stale(args.out)
        for name in names:
            sys.stderr.write(f"stale: {args.out / name}\n")
        return 1 if names else 0
    for path in write(args.out):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
