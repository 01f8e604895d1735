"""The metric names devices put in ``Reading.values``, with their unit and physical range.

One registry that the simulator, the rules (unit checks, out-of-range detection), the edge's
telemetry and the dashboards share. A metric not listed here is still accepted on the wire
(newer firmware), but rules can only refer to listed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    low: float  # the sensor's physical range: a value outside it is a fault, not a reading
    high: float
    what: str


_ALL = (
    # Life safety
    Metric("gas_lel", "%LEL", 0, 100, "combustible gas, percent of the lower explosive limit"),
    Metric("co_ppm", "ppm", 0, 2000, "carbon monoxide concentration"),
    Metric("smoke_obs", "%/m", 0, 30, "smoke obscuration per metre"),
    Metric("temp_c", "°C", -40, 150, "air temperature (heat detector, room, pump)"),
    Metric("residual_ma", "mA", 0, 3000, "residual (leakage) current of a circuit"),
    Metric("cable_temp_c", "°C", -40, 200, "cable or terminal temperature"),
    Metric("water_level_cm", "cm", 0, 500, "water level above the floor or sump bottom"),
    # Parcel lockers (one device per locker bank; per-door values are named door_N_*)
    Metric("door_open", "bool", 0, 1, "a door is open (1) or closed (0)"),
    Metric("occupied", "bool", 0, 1, "a compartment holds a parcel"),
    Metric("tamper", "bool", 0, 1, "tamper switch tripped"),
    Metric("pin_failures", "count", 0, 1000, "failed PIN attempts since the last report"),
    Metric("unlock_authorised", "bool", 0, 1, "the last opening followed an authorised unlock"),
    Metric("parcel_age_h", "h", 0, 10000, "age of the oldest uncollected parcel"),
    Metric("power_ok", "bool", 0, 1, "mains power present"),
    # Elder care
    Metric("motion", "bool", 0, 1, "PIR motion detected in the reporting interval"),
    Metric("contact_open", "bool", 0, 1, "door contact open"),
    Metric("bed_occupied", "bool", 0, 1, "someone is in bed"),
    Metric("heart_rate_bpm", "bpm", 0, 250, "heart rate"),
    Metric("spo2_pct", "%", 0, 100, "blood oxygen saturation"),
    Metric("fall", "bool", 0, 1, "the wearable detected a fall"),
    Metric("sos", "bool", 0, 1, "the SOS button was pressed"),
    Metric("battery_pct", "%", 0, 100, "battery charge"),
    # Water-supply pump room
    Metric("vibration_mm_s", "mm/s", 0, 100, "vibration velocity (RMS)"),
    Metric("motor_current_a", "A", 0, 500, "motor current"),
    Metric("pressure_bar", "bar", -1, 40, "outlet pressure"),
    Metric("flow_m3h", "m³/h", 0, 1000, "flow rate"),
)

METRICS: dict[str, Metric] = {m.name: m for m in _ALL}


def metric(name: str) -> Metric | None:
    """The registered metric, also for per-door locker names such as ``door_3_open``."""
    found = METRICS.get(name)
    if found is None and name.startswith("door_"):
        _, _, rest = name.partition("_")
        _, _, base = rest.partition("_")
        found = METRICS.get(base) or METRICS.get(f"door_{base}")
    return found


def outside_range(values: Mapping[str, float]) -> dict[str, float] | None:
    """The values outside their sensor's physical range, or None: a value a sensor cannot
    produce is a fault of that channel, not a reading (a negative %LEL must not clear a gas
    alarm). The edge's ingest and the rules' replay split readings with it alike."""
    bad: dict[str, float] | None = None
    for name, value in values.items():
        known = METRICS.get(name) or metric(name)  # the registry first: every reading's way
        if known is not None and not known.low <= value <= known.high:
            if bad is None:
                bad = {}
            bad[name] = value
    return bad


def split_by_range(values: dict[str, float]) -> tuple[dict[str, float], dict[str, float] | None]:
    """``values`` less those outside their physical range (the same dict when none is), and
    those (see outside_range)."""
    bad = outside_range(values)
    if bad is None:
        return values, None
    return {name: value for name, value in values.items() if name not in bad}, bad
