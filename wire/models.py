"""Versioned payload models: what travels between devices, gateways and the hub.

Every payload carries ``v`` (its schema version). Devices and gateways are machines we do not
upgrade in lock-step, so telemetry models tolerate unknown fields within a version (a newer
firmware may add one). Models that make something happen (commands, broadcasts, acks) are
strict: a receiver must not guess at a field it does not know.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from wire.topics import ID_PATTERN

SCHEMA_VERSION = 1

Id = Annotated[str, Meta(pattern=f"^{ID_PATTERN}$", max_length=64)]
EventId = Annotated[
    str, Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
]
Timestamp = Annotated[datetime, Meta(tz=True)]
Name = Annotated[str, Meta(min_length=1, max_length=64)]
ShortText = Annotated[str, Meta(max_length=256)]
LongText = Annotated[str, Meta(max_length=4096)]
Version = Annotated[int, Meta(ge=1, le=1000)]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
# One reading carries a handful of channels; a few dozen is already a misbehaving device.
Values = Annotated[dict[Name, float], Meta(max_length=32)]


class Severity(StrEnum):
    """CAP 1.2's severity scale, which the rules, alerts and broadcasts share."""

    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Phase(StrEnum):
    """Where an alert is in its life."""

    RAISED = "raised"
    UPDATED = "updated"
    CLEARED = "cleared"


class _Telemetry(msgspec.Struct, kw_only=True, frozen=True):
    v: Version = SCHEMA_VERSION


class _Strict(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    v: Version = SCHEMA_VERSION


class Reading(_Telemetry, kw_only=True, frozen=True):
    """One measurement from one device. ``values`` maps a metric (e.g. ``gas_lel``) to a number."""

    device: Id
    seq: Seq
    ts: Timestamp
    values: Values


class DeviceStatus(_Telemetry, kw_only=True, frozen=True):
    """A device's online/offline state (retained; ``offline`` is also its last will)."""

    device: Id
    state: Literal["online", "offline"]
    ts: Timestamp
    kind: Name | None = None
    battery_pct: Annotated[float, Meta(ge=0, le=100)] | None = None
    # What the device's own actuators are doing, e.g. {"siren": "on"}.
    actuators: Annotated[dict[Name, Name], Meta(max_length=16)] = {}
    # Where it is and how often it reports: what a gateway that discovers devices takes in
    # (docs/edge.md, "Discovered devices"); a listed device's config wins over them.
    unit: Id | None = None
    room: Name | None = None
    interval_s: Annotated[float, Meta(ge=0.1, le=86400)] | None = None


class AlertEvent(_Telemetry, kw_only=True, frozen=True):
    """An alert's step: raised, updated (severity or evidence changed) or cleared.

    ``id`` is a UUIDv7 made at the edge, unique per event; receivers are idempotent on it.
    ``key`` names the alert itself (rule and scope) and is the same for all its events.
    """

    id: EventId
    key: Annotated[str, Meta(min_length=1, max_length=200)]
    phase: Phase
    severity: Severity
    kind: Name
    rule: Name
    site: Id
    gateway: Id
    device: Id | None = None
    building: Id | None = None
    unit: Id | None = None
    ts: Timestamp
    evidence: Values = {}
    message: ShortText = ""
    # What the rule asked for beyond the gateway: "notify", "broadcast" (the hub acts on them);
    # and whether this is a life-safety alarm (fire, gas, CO: never held back, never dropped).
    actions: Annotated[list[Name], Meta(max_length=8)] = []
    life_safety: bool = False


class Ack(_Strict, kw_only=True, frozen=True):
    """The hub has durably stored these alert event ids; the edge may forget them."""

    ids: Annotated[list[EventId], Meta(min_length=1, max_length=500)]
    ts: Timestamp


class Heartbeat(_Telemetry, kw_only=True, frozen=True):
    """Gateway health, sent periodically (retained); the last will says ``offline``."""

    site: Id
    gateway: Id
    state: Literal["online", "offline"]
    ts: Timestamp
    uptime_s: Annotated[float, Meta(ge=0)] = 0.0
    outbox_depth: Annotated[int, Meta(ge=0)] = 0
    devices_online: Annotated[int, Meta(ge=0)] = 0
    counters: Annotated[dict[Annotated[str, Meta(max_length=128)], int], Meta(max_length=256)] = {}


CommandAction = Literal["siren_on", "siren_off", "valve_close", "valve_open", "play", "stop"]


class Command(_Strict, kw_only=True, frozen=True):
    """Something a gateway tells one device to do. ``cause`` is the alert event behind it."""

    id: EventId
    device: Id
    action: CommandAction
    ts: Timestamp
    cause: EventId | None = None
    broadcast: Broadcast | None = None  # for "play" on a speaker


class Broadcast(_Strict, kw_only=True, frozen=True):
    """A warning to play on a site's speakers (all of them, or those of chosen buildings).

    ``cap`` holds the CAP 1.2 XML of the same warning when the hub composed one.
    """

    id: EventId
    site: Id
    ts: Timestamp
    status: Literal["Actual", "Exercise", "Test"] = "Actual"
    msg_type: Literal["Alert", "Update", "Cancel"] = "Alert"
    severity: Severity
    headline: ShortText
    text: LongText
    language: Annotated[str, Meta(pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")] = "zh-CN"
    buildings: Annotated[list[Id], Meta(max_length=500)] = []
    repeat: Annotated[int, Meta(ge=1, le=10)] = 1
    expires: Timestamp | None = None
    cause: EventId | None = None
    cap: Annotated[str, Meta(max_length=32768)] | None = None


class Receipt(_Telemetry, kw_only=True, frozen=True):
    """One speaker played (or failed to play) one broadcast."""

    broadcast_id: EventId
    speaker: Id
    outcome: Literal["played", "failed"]
    ts: Timestamp
    content_hash: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    site: Id | None = None
    gateway: Id | None = None
    building: Id | None = None
    detail: ShortText = ""


class DeadLetter(_Telemetry, kw_only=True, frozen=True):
    """Input the edge rejected, with the reason, so that someone can fix its source."""

    site: Id
    gateway: Id
    topic: Annotated[str, Meta(max_length=1024)]
    reason: Annotated[str, Meta(max_length=64)]
    detail: ShortText
    ts: Timestamp
    size: Annotated[int, Meta(ge=0)]
    excerpt: ShortText = ""  # the start of the payload, for a human to recognise it
    # How many more like this one (same topic and reason) the gateway withheld since its last
    # report: a flood is summarised, not forwarded letter by letter (docs/edge.md).
    repeats: Annotated[int, Meta(ge=0)] = 0


# Every model, by name: used for the JSON Schemas in docs/schemas/.
MODELS: dict[str, type[msgspec.Struct]] = {
    "Reading": Reading,
    "DeviceStatus": DeviceStatus,
    "AlertEvent": AlertEvent,
    "Ack": Ack,
    "Heartbeat": Heartbeat,
    "Command": Command,
    "Broadcast": Broadcast,
    "Receipt": Receipt,
    "DeadLetter": DeadLetter,
}
