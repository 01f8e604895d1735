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


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Id
    kind: Literal["gas", "speaker"]
    unit: Id | None = None
    room: str | None = None


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
    # An unacknowledged alert is sent again after this long (doubling up to 60 s).
    uplink_retry_s: Annotated[float, Meta(gt=0, le=600)] = 2.0
    heartbeat_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0

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
