"""The gateway's configuration: written by an installer, so validated strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from rules import RuleSet, load_file, load_yaml
from wire.topics import ID_PATTERN

Id = Annotated[str, Meta(pattern=f"^{ID_PATTERN}$")]
Port = Annotated[int, Meta(ge=1, le=65535)]


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: str | None = None


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


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Id
    kind: DeviceKind
    unit: Id | None = None
    room: str | None = None
    # How often the device reports; silence for `silent_after` intervals marks it offline.
    interval_s: Annotated[float, Meta(gt=0, le=86400)] = 60.0


class TelemetryConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Downsampled series to InfluxDB (v1 /write: 1.x, 2.x via DBRP, 3.x)."""

    url: str = "http://127.0.0.1:8086"
    database: str = "anmin"
    username: str | None = None
    password: str | None = None
    interval_s: Annotated[int, Meta(ge=1, le=3600)] = 10
    flush_s: Annotated[float, Meta(gt=0, le=600)] = 5.0
    # While InfluxDB is down, batches wait on disk up to this size; then the oldest go.
    buffer_max_mb: Annotated[float, Meta(gt=0, le=10_000)] = 50.0


class OutboxConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Bounds for what waits for the hub. Life-safety alerts are never dropped."""

    max_entries: Annotated[int, Meta(ge=100)] = 100_000
    max_age_days: Annotated[float, Meta(gt=0)] = 30.0


class EdgeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    site: Id
    gateway: Id
    building: Id
    data_dir: str = "var/edge"
    broker: BrokerConfig = BrokerConfig()
    # The hub's broker, when it is not the gateway's own (otherwise a bridge joins them).
    uplink: BrokerConfig | None = None
    devices: list[DeviceConfig] = []
    rules: RuleSet = RuleSet()
    # An unacknowledged alert is sent again after this long (doubling, see the next).
    uplink_retry_s: Annotated[float, Meta(gt=0, le=600)] = 2.0
    # The backoff stops growing here; a hub coming back online also resets it at once.
    uplink_retry_max_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    heartbeat_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    outbox: OutboxConfig = OutboxConfig()
    telemetry: TelemetryConfig | None = None
    # Prometheus /metrics on this port (None: off).
    metrics_port: Port | None = None
    # An Extreme alarm not acknowledged by the hub within this time is announced on the
    # building's own speakers by the gateway (the hub would have broadcast it by then).
    local_warning_after_s: Annotated[float, Meta(gt=0, le=600)] = 15.0
    # A device silent for this many reporting intervals is offline.
    silent_after: Annotated[float, Meta(ge=1, le=1000)] = 3.0

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is listed twice under devices")
            seen.add(device.id)


def load(path: Path) -> EdgeConfig:
    return load_file(path, EdgeConfig)


def parse(text: str, source: str = "<edge config>") -> EdgeConfig:
    return load_yaml(text, EdgeConfig, source)
