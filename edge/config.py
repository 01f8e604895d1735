"""The gateway's configuration: written by an installer, so validated strictly."""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import yaml
from msgspec import Meta

from rules import ConfigError, RuleSet, load_file, load_rules, load_yaml
from wire.topics import ID_PATTERN

Id = Annotated[str, Meta(pattern=f"^{ID_PATTERN}$")]
Port = Annotated[int, Meta(ge=1, le=65535)]


class TlsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """TLS to a broker (``anmin broker ca`` makes the site's CA and certificates)."""

    ca_file: str | None = None  # the site CA; None: the system's trust store
    cert_file: str | None = None  # this gateway's client certificate, if the broker asks
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: give cert_file and key_file together")


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None  # required whenever the broker is not on this machine


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

# Elder-care devices: their series leave the gateway per building only (DESIGN.md, principle 5).
PRIVATE_KINDS: frozenset[str] = frozenset({"pir", "door", "bed", "wearable", "sos"})

DEFAULT_INTERVAL_S = 60.0


class DeviceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Id
    kind: DeviceKind
    unit: Id | None = None
    room: str | None = None
    resident: Id | None = None  # elder care: whose routine this device watches
    # How often the device reports; silence for `silent_after` intervals marks it offline.
    # At least 0.1 s: a device "reporting" every 1e-300 s is silent after every reading.
    interval_s: Annotated[float, Meta(ge=0.1, le=86400)] = DEFAULT_INTERVAL_S


class TelemetryConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Downsampled series to InfluxDB (v1 /write: 1.x, 2.x via DBRP, 3.x)."""

    url: str = "http://127.0.0.1:8086"
    database: str = "anmin"
    username: str | None = None
    password: str | None = None
    interval_s: Annotated[int, Meta(ge=1, le=3600)] = 10
    flush_s: Annotated[float, Meta(ge=0.1, le=600)] = 5.0  # below: a busy loop on the card
    # While InfluxDB is down, batches wait on disk up to this size; then the oldest go.
    buffer_max_mb: Annotated[float, Meta(gt=0, le=10_000)] = 50.0
    # Retention of the downsampled series: the edge creates (or alters) a default retention
    # policy of this many days on its database, and drops buffered batches older than that
    # (InfluxDB would refuse them). 0: leave the database's retention alone.
    retention_days: Annotated[int, Meta(ge=0, le=36_500)] = 90
    # Elder-care kinds (wearable, pir, bed, door, sos) are written per building only, as count
    # and mean, and only for windows where at least this many distinct devices reported: with
    # fewer, the building's aggregate would be one resident's readings.
    k_anonymity: Annotated[int, Meta(ge=2, le=1000)] = 3


class DiscoveryConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Devices not listed under ``devices:`` that announce themselves are taken in: a retained
    status naming their kind (and optionally unit, room and interval_s). Only on a broker
    where a device can publish under its own id alone (client certificates or credentials
    with a pattern ACL, docs/security.md): the announcement is all there is to trust."""

    # The kinds that may join this way; a life-safety sensor an installer forgot to list
    # is protected at once, a speaker or a resident's wearable may be left to the list.
    kinds: list[DeviceKind] = msgspec.field(default_factory=lambda: list(get_args(DeviceKind)))
    # At most this many devices taken in (junk under ever new ids must not grow the gateway).
    max_devices: Annotated[int, Meta(ge=1, le=10_000)] = 500


class OutboxConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Bounds for what waits for the hub. Life-safety alerts are never dropped."""

    max_entries: Annotated[int, Meta(ge=100)] = 100_000
    # At most ten years: past that the prune's cut-off overflows SQLite's integers (at .inf,
    # Python's int()), which stopped the agent at its first housekeeping round.
    max_age_days: Annotated[float, Meta(gt=0, le=3650)] = 30.0


class EdgeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    site: Id
    gateway: Id
    building: Id
    data_dir: str = "var/edge"
    broker: BrokerConfig = BrokerConfig()
    # The hub's broker, when it is not the gateway's own (otherwise a bridge joins them).
    uplink: BrokerConfig | None = None
    devices: list[DeviceConfig] = []
    # Devices that announce themselves, besides those listed (None: the list only).
    discovery: DiscoveryConfig | None = None
    rules: RuleSet = RuleSet()
    # A rule file instead of (not beside) an inline `rules:` section, relative to this file.
    rules_file: str | None = None
    # An unacknowledged alert is sent again after this long (doubling, see the next). The
    # lower bounds here keep a typo from turning a loop into a busy one (under 0.5 ms, every
    # unacknowledged alert was sent again on every turn).
    uplink_retry_s: Annotated[float, Meta(ge=0.1, le=600)] = 2.0
    # The backoff stops growing here; a hub coming back online also resets it at once.
    uplink_retry_max_s: Annotated[float, Meta(ge=0.1, le=3600)] = 15.0
    heartbeat_s: Annotated[float, Meta(ge=1, le=3600)] = 10.0
    outbox: OutboxConfig = OutboxConfig()
    telemetry: TelemetryConfig | None = None
    # Prometheus /metrics on this port (None: off).
    metrics_port: Port | None = None
    # An Extreme alarm not acknowledged by the hub within this time is announced on the
    # building's own speakers by the gateway (the hub would have broadcast it by then).
    local_warning_after_s: Annotated[float, Meta(ge=0.1, le=600)] = 15.0
    # A device silent for this many reporting intervals is offline.
    silent_after: Annotated[float, Meta(ge=1, le=1000)] = 3.0
    # Processes the agent runs as, each with its share of the flats (edge/parts.py): more
    # readings a second on a gateway with the cores for it. 1 on a Raspberry Pi.
    parts: Annotated[int, Meta(ge=1, le=16)] = 1

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is listed twice under devices")
            seen.add(device.id)


def part_key(device: DeviceConfig) -> str:
    """What decides a device's part: its flat, else its resident, else the device alone."""
    if device.unit is not None:
        return f"unit/{device.unit}"
    if device.resident is not None:
        return f"resident/{device.resident}"
    return f"device/{device.id}"


def part_of(device: DeviceConfig, count: int) -> int:
    """The part that runs ``device`` (crc32: the same on every start and machine)."""
    if count <= 1:
        return 0
    return zlib.crc32(part_key(device).encode()) % count


def parts_problems(config: EdgeConfig) -> list[tuple[str, str]]:
    """What ``parts`` cannot run in this config, as (where, what and how to fix it)."""
    if config.parts <= 1:
        return []
    out: list[tuple[str, str]] = []
    for rule in config.rules.resolved():
        if rule.scope == "building":
            out.append(
                (
                    "parts",
                    f"rule {rule.id!r} has scope building, and with parts: {config.parts} each"
                    " part sees only its own flats; give it scope unit, resident or device, or"
                    " set parts: 1",
                )
            )
    if not any(rule.scope == "resident" for rule in config.rules.resolved()):
        return out  # no rule reads a resident's devices together
    residents: dict[str, dict[int, str]] = {}
    for device in config.devices:
        if device.resident is not None:
            where = residents.setdefault(device.resident, {})
            where.setdefault(part_of(device, config.parts), device.id)
    for resident, where in sorted(residents.items()):
        if len(where) > 1:
            named = ", ".join(f"{device} (part {part})" for part, device in sorted(where.items()))
            out.append(
                (
                    "devices",
                    f"resident {resident!r}'s devices fall in different parts: {named}; a"
                    " resident's rules need all of them in one part: give them the unit the"
                    " resident lives in, or set parts: 1",
                )
            )
    return out


ENV_PREFIX = "ANMIN_EDGE_"


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``ANMIN_EDGE_BROKER__HOST=10.0.0.2`` -> ``{"broker": {"host": "10.0.0.2"}}``.

    Values are read as YAML scalars (so ``1883`` is a number and ``true`` a flag): an
    installer can override any key of the file without editing it, e.g. a password.
    """
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or not raw:
            continue
        path = name.removeprefix(ENV_PREFIX).lower().split("__")
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = yaml.safe_load(raw)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load(path: Path, env: Mapping[str, str] | None = None) -> EdgeConfig:
    """The config file, with ``ANMIN_EDGE_*`` environment variables on top."""
    environment = os.environ if env is None else env
    # The file must be valid on its own, so that its errors come with their line numbers.
    config = load_file(path, EdgeConfig)
    if config.rules_file is not None:
        if config.rules != RuleSet():
            raise ConfigError(
                str(path), None, "rules", "give either rules: or rules_file:, not both"
            )
        rules_path = Path(config.rules_file)
        if not rules_path.is_absolute():
            rules_path = path.parent / rules_path
        config = msgspec.structs.replace(config, rules=load_rules(rules_path))
    overrides = env_overrides(environment)
    if overrides:
        data = msgspec.to_builtins(config)
        try:
            config = msgspec.convert(_merge(data, overrides), EdgeConfig, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            names = ", ".join(sorted(n for n in environment if n.startswith(ENV_PREFIX)))
            raise ConfigError(str(path), None, "", f"{exc} (set by {names})") from exc
    for where, problem in parts_problems(config):
        raise ConfigError(str(path), None, where, problem)
    return config


def parse(text: str, source: str = "<edge config>") -> EdgeConfig:
    return load_yaml(text, EdgeConfig, source)
