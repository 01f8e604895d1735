"""Replay files and ground truth: what the simulator records and the rules replay offline.

A replay is JSON Lines: one ``ReplayHeader`` line, then ``ReplayRecord`` lines in time order.
Ground truth is one JSON document (``GroundTruth``) written beside it, so that detection and
delivery can be scored against what really happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from wire.models import Id, Name, Reading, Severity, Timestamp


class DeviceInfo(msgspec.Struct, kw_only=True, frozen=True):
    """Where a device is and what it is: the scope rules correlate over."""

    id: Id
    kind: Name  # gas, co, smoke, heat, electrical, flood, locker, pir, door, bed, wearable,
    # sos, speaker, pump
    site: Id
    gateway: Id
    building: Id
    unit: Id | None = None
    room: Name | None = None
    resident: Id | None = None
    interval_s: Annotated[float, Meta(gt=0)] = 60.0


class ReplayHeader(msgspec.Struct, kw_only=True, frozen=True, tag="header"):
    v: int = 1
    scenario: str
    seed: int
    start: Timestamp
    end: Timestamp
    devices: list[DeviceInfo]


class ReplayRecord(msgspec.Struct, kw_only=True, frozen=True, tag="reading"):
    """One reading as the gateway received it; ``at`` is arrival time at the gateway."""

    at: Timestamp
    site: Id
    gateway: Id
    reading: Reading


class ExpectedAlert(msgspec.Struct, kw_only=True, frozen=True):
    """An alert a correct system must raise for an incident."""

    kind: Name
    severity: Severity
    scope: Literal["device", "unit", "building", "resident"] = "device"
    device: Id | None = None
    unit: Id | None = None
    building: Id | None = None
    latest: Timestamp  # raised after this is too late


class Incident(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    kind: Name  # gas_leak, co, kitchen_fire, electrical_fault, flood, fall, sos, ...
    life_safety: bool
    site: Id
    building: Id
    unit: Id | None = None
    start: Timestamp
    end: Timestamp
    expect: list[ExpectedAlert] = []
    # An alert that must NOT be raised (e.g. cooking must not alarm as CO): kind and scope.
    forbid: list[ExpectedAlert] = []


class DeviceFault(msgspec.Struct, kw_only=True, frozen=True):
    """A fault the simulator injected, so that health rules can be scored too."""

    device: Id
    fault: Name  # dropout, stuck, noise_burst, drift, dead_battery, duplicate, reorder,
    # delay, clock_skew, malformed
    start: Timestamp
    end: Timestamp


class GroundTruth(msgspec.Struct, kw_only=True, frozen=True):
    v: int = 1
    scenario: str
    seed: int
    start: Timestamp
    end: Timestamp
    incidents: list[Incident] = []
    faults: list[DeviceFault] = []


ReplayLine = ReplayHeader | ReplayRecord


def encode_line(line: ReplayLine) -> bytes:
    return msgspec.json.encode(line) + b"\n"


def decode_lines(data: bytes) -> list[ReplayLine]:
    decoder = msgspec.json.Decoder(ReplayLine)
    return [decoder.decode(raw) for raw in data.splitlines() if raw.strip()]


def in_window(at: datetime, start: datetime, end: datetime) -> bool:
    return start <= at <= end
