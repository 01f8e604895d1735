"""Ingest: what devices send, checked before anything acts on it.

Bad input gets a reason, a counter and a dead letter; it never raises out of here, and a bad
message from one device never stops good readings from another.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import get_args

import msgspec

from edge.config import DEFAULT_INTERVAL_S, DeviceConfig, DeviceKind, DiscoveryConfig
from wire import Codec, DeviceStatus, Reading, Reason, Receipt, WireError, topics
from wire.errors import shown
from wire.metrics import metric, outside_range, split_by_range
from wire.topics import Channel

# How far back a sequence number may be and still count as reordered rather than a restart.
REORDER_WINDOW = 64
METRICS_PER_DEVICE = 64  # different metric names one device may send, all told
_KINDS: tuple[DeviceKind, ...] = get_args(DeviceKind)
# What a part hands on to the part that owns the device (see Accepted.hand_on).
_HANDED = frozenset({Channel.READING, Channel.DEVICE_RECEIPT})
UNKNOWN_REMEMBERED = 10_000  # unknown devices reported once each (see Ingest._unknown_reported)


@dataclass(slots=True)
class DeviceHealth:
    """What the gateway knows about one device."""

    config: DeviceConfig
    state: str = "unknown"  # online / offline / unknown
    last_seq: int | None = None
    last_ts: datetime | None = None  # the latest stamp on a reading received (see _check_seq)
    last_seen: datetime | None = None
    last_values: dict[str, float] = field(default_factory=dict)
    actuators: dict[str, str] = field(default_factory=dict)
    # Metrics it has sent only outside their physical range (so none in last_values): they
    # count against METRICS_PER_DEVICE all the same, as the rules keep their faults.
    faulty: set[str] = field(default_factory=set)


class Rejection(msgspec.Struct, frozen=True):
    reason: Reason
    detail: str
    topic: str
    payload: bytes
    report: bool = True  # False when this fault was already reported (an unknown device)


class Accepted(msgspec.Struct, frozen=True):
    """Decoded, checked input, by kind (a msgspec Struct, made for every message: a frozen
    dataclass cost ~0.4 µs more)."""

    readings: list[Reading] = []
    status: DeviceStatus | None = None
    receipt: Receipt | None = None
    # What was left out of an accepted message, for a letter: metrics past METRICS_PER_DEVICE,
    # or a watched device's move to where discovery does not take it.
    dropped: Rejection | None = None
    # Each reading's values left out as outside their sensor's physical range (its channel
    # is faulted: Engine.feed), aligned with ``readings``; None when none had any.
    outside: list[dict[str, float] | None] | None = None
    # A device taken in (or moved) by its own announcement (see Ingest._announced).
    discovered: DeviceConfig | None = None
    # A discovered device whose retained announcement was cleared: no longer watched.
    forgotten: str | None = None
    # In parts: another part's reading or receipt, which this part's persistent session held
    # from a run with other parts (the agent hands it on to that part).
    hand_on: bool = False


_ELSEWHERE = Accepted()  # what another part's device sends, here (see Ingest.owns)
_HAND_ON = Accepted(hand_on=True)


class _Refused(WireError):
    """A device of this part's flats that this part refuses (its discovery is full): this
    part reports it, though no part has the device."""


class Ingest:
    def __init__(
        self,
        site: str,
        gateway: str,
        devices: list[DeviceConfig],
        codec: Codec,
        discovery: DiscoveryConfig | None = None,
        *,
        owns: Callable[[DeviceConfig], bool] | None = None,
        elsewhere: Iterable[DeviceConfig] = (),
    ) -> None:
        """``owns``: with the agent in parts (edge/parts.py), whether a device is this part's;
        ``elsewhere``: the listed devices of the other parts. Every part hears every status;
        those of other parts' devices pass here unremarked, and an unknown device is reported
        by the part that speaks for the gateway (``reports_unknown``)."""
        self.site = site
        self.gateway = gateway
        self.codec = codec
        self.devices = {d.id: DeviceHealth(d) for d in devices}
        self.discovery = discovery
        # Devices taken in by their own announcement, as announced (none is listed).
        self.discovered: dict[str, DeviceConfig] = {}
        # Devices discovered before whose saved entries cannot be read: the rules keep them
        # until they announce again, or their announcement is cleared (set by the agent).
        self.unreadable: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.owns = owns
        self.elsewhere: dict[str, DeviceConfig] = {d.id: d for d in elsewhere}
        self.reports_unknown = True
        # Devices discovery takes in for another part (their statuses pass unremarked): at
        # most UNKNOWN_REMEMBERED, oldest forgotten first.
        self._discovered_elsewhere: dict[str, DeviceConfig] = {}
        # Unknown devices already reported, oldest first (one dead letter for a device's
        # readings and receipts, one for its statuses, which say why an announcement was
        # refused): at most UNKNOWN_REMEMBERED (junk under ever new device ids must not grow
        # it for months); one forgotten is reported again if it comes back.
        self._unknown_reported: dict[str, None] = {}
        # A gateway hears the same few thousand topics all day: each is parsed once (a bad one
        # raises every time; junk topics can only churn the bounded cache).
        self._parse = functools.lru_cache(maxsize=16_384)(topics.parse)

    def accept(self, topic: str, payload: bytes, now: datetime) -> Accepted | Rejection:
        try:
            return self._accept(topic, payload, now)
        except WireError as exc:
            if self.owns is not None and not isinstance(exc, _Refused) and not self._reports(topic):
                return Rejection(exc.reason, exc.detail, topic, payload, report=False)
            self.counters[f"rejected.{exc.reason}"] += 1
            report = True
            if exc.reason is Reason.UNKNOWN_DEVICE:
                # One dead letter per unknown device, not one per message: a stray device
                # publishing every second must not flood the hub.
                # Its topic parsed (from the cache) before it was found unknown. Its status
                # apart: why an announcement was refused must reach a person even after its
                # readings were reported.
                parsed = self._parse(topic)
                key = parsed.device or topic
                if parsed.channel is Channel.STATUS:
                    key += "/status"
                report = key not in self._unknown_reported
                if report:
                    if len(self._unknown_reported) >= UNKNOWN_REMEMBERED:
                        del self._unknown_reported[next(iter(self._unknown_reported))]
                    self._unknown_reported[key] = None
            return Rejection(exc.reason, exc.detail, topic, payload, report)

    def _reports(self, topic: str) -> bool:
        """In parts: whether this part reports (and counts) what is wrong with a message on
        ``topic``. Its own devices' faults, it does; another part's device's, that part
        does; a device no part has (a status of one unknown, or junk), the part that speaks
        for the gateway does: every part hears every status."""
        try:
            device = self._parse(topic).device
        except WireError:
            return self.reports_unknown
        if device is not None and device in self.devices:
            return True
        if device is not None and (
            device in self.elsewhere or device in self._discovered_elsewhere
        ):
            return False
        return self.reports_unknown

    def _accept(self, topic: str, payload: bytes, now: datetime) -> Accepted:
        parsed = self._parse(topic)
        if parsed.site != self.site or parsed.gateway != self.gateway:
            raise WireError(Reason.BAD_TOPIC, f"topic {topic!r} is not for this gateway")
        device_id = parsed.device
        if device_id is None:
            raise WireError(Reason.BAD_TOPIC, f"topic {topic!r} is not a device topic")
        if parsed.channel is Channel.CMD:
            return Accepted()  # our own commands to devices, echoed by the subscription
        health = self.devices.get(device_id)
        if health is None and self.owns is not None:  # in parts; never on a reading's path
            passes = _HAND_ON if parsed.channel in _HANDED else _ELSEWHERE
            if device_id in self.elsewhere:
                return passes  # another part's listed device (a part hears every status)
            on_status = parsed.channel is Channel.STATUS
            # Another part's discovered device; an announcement may move it here (_announced).
            if device_id in self._discovered_elsewhere and not (on_status and payload):
                if on_status:  # its announcement cleared
                    del self._discovered_elsewhere[device_id]
                return passes
        if parsed.channel is Channel.STATUS and not payload and self._discovered(device_id):
            # A cleared retained announcement: what an installer does to forget one.
            self.discovered.pop(device_id, None)
            self.devices.pop(device_id, None)
            self.unreadable.discard(device_id)
            self.counters["devices_forgotten"] += 1
            self._report_again(device_id)
            return Accepted(forgotten=device_id)
        if (
            parsed.channel is Channel.STATUS
            and self.discovery is not None
            and payload
            and (health is None or device_id in self.discovered)
        ):
            return self._announced(device_id, topic, payload, now)
        if health is None:
            fix = "add it under devices:"
            if self.discovery is not None:
                kinds = ", ".join(sorted(self.discovery.kinds))
                fix += f", or have it announce its kind ({kinds}) in a retained status"
            raise WireError(
                Reason.UNKNOWN_DEVICE,
                f"device {shown(device_id)} is neither configured nor discovered; {fix}",
            )
        # No timestamp window: the rules judge a reading by its arrival on the gateway's clock,
        # so a device (or gateway) whose clock is wrong must not make its gas readings vanish.
        # The skew is counted, and the device-health preset alarms on it (clock_skew).
        if parsed.channel is Channel.READING:
            readings, faults = self.codec.decode_readings_apart(payload, now, check_time=False)
            for reading in readings:
                if self.codec.skewed(reading.ts, now):
                    self.counters["clock_skewed"] += 1
            sent = len(readings) + len(faults)
            accepted, outside = self._in_sequence(health, readings, now, faults)
            if not faults:
                return Accepted(readings=accepted)
            # Each fault counted once: here, or the one raised by accept().
            for fault in faults if accepted else faults[1:]:
                self.counters[f"rejected.{fault.reason}"] += 1
            left_out = _left_out(faults, sent)
            if not accepted:
                raise left_out
            letter = Rejection(left_out.reason, left_out.detail, topic, payload)
            return Accepted(readings=accepted, dropped=letter, outside=outside)
        if parsed.channel is Channel.STATUS:
            if not payload:  # a cleared retained status
                return Accepted()
            status = self.codec.decode(payload, DeviceStatus, now, check_time=False)
            self._check_device(status.device, device_id)
            health.state = status.state
            health.actuators = dict(status.actuators)
            self.counters[f"status.{status.state}"] += 1
            return Accepted(status=status)
        receipt = self.codec.decode(payload, Receipt, now, check_time=False)
        self._check_device(receipt.speaker, device_id)
        if health.config.kind != "speaker":  # else the hub would count it as a delivery
            raise WireError(
                Reason.INVALID_VALUE,
                f"device {device_id!r} is a {health.config.kind} device, not a speaker: only"
                " speakers send broadcast receipts; check its firmware's topics",
            )
        self.counters["receipts"] += 1
        return Accepted(receipt=receipt)

    def take_in(self, configs: Iterable[DeviceConfig]) -> list[DeviceConfig]:
        """Devices discovered before (the agent keeps them across restarts): those discovery
        still takes in and the config does not list (a listed device is as listed)."""
        taken: list[DeviceConfig] = []
        discovery = self.discovery
        if discovery is None:
            return taken
        for config in configs:
            if self.owns is not None and not self.owns(config):
                if config.id not in self.elsewhere and config.kind in discovery.kinds:
                    self._note_elsewhere(config)  # another part's, saved there or here
                continue
            if (
                config.id not in self.devices
                and config.kind in discovery.kinds
                and len(self.discovered) < discovery.max_devices
            ):
                self.devices[config.id] = DeviceHealth(config)
                self.discovered[config.id] = config
                taken.append(config)
        return taken

    def _announced(self, device_id: str, topic: str, payload: bytes, now: datetime) -> Accepted:
        """A status from a device discovery may take in, or took in before: an online one
        naming its kind (an announcement) takes the device in, or moves it; any other is
        only its status."""
        status = self.codec.decode(payload, DeviceStatus, now, check_time=False)
        self._check_device(status.device, device_id)
        health = self.devices.get(device_id)
        discovered: DeviceConfig | None = None
        # Only coming online announces: a last will (offline) set with the kind alone must
        # not move a device out of its unit.
        refused: Rejection | None = None
        if status.kind is not None and status.state == "online":
            try:
                config = self._discovered_config(device_id, status)
                if self.owns is not None and not self.owns(config):
                    return self._elsewhere(device_id, config)  # another part's limit
                self._check_room(device_id)
            except WireError as exc:
                if health is None:
                    raise
                # Watched already: the move is refused (a letter says why); the device stays
                # where it was, and that it is online still counts.
                self.counters[f"rejected.{exc.reason}"] += 1
                refused = Rejection(exc.reason, exc.detail, topic, payload)
            else:
                if health is None:
                    health = self.devices[device_id] = DeviceHealth(config)
                    self.counters["devices_discovered"] += 1
                    self._report_again(device_id)
                    discovered = config
                elif config != health.config:
                    health.config = config
                    self.counters["devices_moved"] += 1
                    discovered = config
                self.discovered[device_id] = config
                self.unreadable.discard(device_id)  # its entry is written anew
        elif health is None:
            if device_id in self._discovered_elsewhere:
                return _ELSEWHERE  # another part's, going offline
            raise WireError(
                Reason.UNKNOWN_DEVICE,
                f"device {device_id!r} is not listed under devices: and this status does not"
                " announce it (an online status naming its kind does); list it, or have it"
                " announce its kind",
            )
        health.state = status.state
        health.actuators = dict(status.actuators)
        self.counters[f"status.{status.state}"] += 1
        return Accepted(status=status, discovered=discovered, dropped=refused)

    def _elsewhere(self, device_id: str, config: DeviceConfig) -> Accepted:
        """A device announced into another part's flat: that part takes it in. One this
        part had taken in (it moved flats) is forgotten here."""
        self._note_elsewhere(config)
        if device_id not in self.discovered:
            return _ELSEWHERE
        del self.discovered[device_id]
        self.devices.pop(device_id, None)
        self.counters["devices_moved_to_another_part"] += 1
        return Accepted(forgotten=device_id)

    def _note_elsewhere(self, config: DeviceConfig) -> None:
        self._discovered_elsewhere.pop(config.id, None)  # to the end: the newest
        self._discovered_elsewhere[config.id] = config
        while len(self._discovered_elsewhere) > UNKNOWN_REMEMBERED:
            del self._discovered_elsewhere[next(iter(self._discovered_elsewhere))]

    def owner(self, device_id: str) -> DeviceConfig | None:
        """Another part's device, as this part knows it (listed, or announced)."""
        return self.elsewhere.get(device_id) or self._discovered_elsewhere.get(device_id)

    def speakers_elsewhere(self) -> list[str]:
        """The other parts' speakers (a local warning sounds on all the building's)."""
        return [
            device
            for known in (self.elsewhere, self._discovered_elsewhere)
            for device, config in known.items()
            if config.kind == "speaker"
        ]

    def _discovered(self, device_id: str) -> bool:
        """Taken in by discovery, or kept for it from an entry that could not be read."""
        return device_id in self.discovered or device_id in self.unreadable

    def _report_again(self, device_id: str) -> None:
        """A device taken in or forgotten: once unknown again, it is reported again."""
        self._unknown_reported.pop(device_id, None)
        self._unknown_reported.pop(f"{device_id}/status", None)

    def _check_room(self, device_id: str) -> None:
        """Raise if discovery is full (in parts: this part's own share of devices)."""
        discovery = self.discovery
        assert discovery is not None
        if device_id not in self.discovered and len(self.discovered) >= discovery.max_devices:
            raise _Refused(
                Reason.UNKNOWN_DEVICE,
                f"device {device_id!r} is not taken in: discovery.max_devices"
                f" ({discovery.max_devices}) devices are already; list it under devices:",
            )

    def _discovered_config(self, device_id: str, status: DeviceStatus) -> DeviceConfig:
        discovery = self.discovery
        assert discovery is not None
        kind = status.kind
        if kind not in _KINDS:
            raise WireError(
                Reason.INVALID_VALUE,
                f"device {device_id!r} announces kind {kind!r}, which is none of {_KINDS}",
            )
        if kind not in discovery.kinds:
            raise WireError(
                Reason.UNKNOWN_DEVICE,
                f"device {device_id!r} announces kind {kind!r}, which discovery does not take"
                f" in (discovery.kinds: {', '.join(discovery.kinds)}); list it under devices:",
            )
        return DeviceConfig(
            id=device_id,
            kind=kind,
            unit=status.unit,
            room=status.room,
            interval_s=status.interval_s or DEFAULT_INTERVAL_S,
        )

    @staticmethod
    def _check_device(named: str, device_id: str) -> None:
        if named != device_id:
            raise WireError(
                Reason.DEVICE_MISMATCH,
                f"payload names device {named!r} but was published on {device_id!r}'s topic",
            )

    def _in_sequence(
        self,
        health: DeviceHealth,
        readings: list[Reading],
        now: datetime,
        faults: list[WireError],
    ) -> tuple[list[Reading], list[dict[str, float] | None] | None]:
        """The readings accepted, and each one's values outside their physical range (see
        Accepted; None when none had any); what was left out is added to ``faults``. In a
        batch a bad reading is left out alone."""
        accepted: list[Reading] = []
        outside: list[dict[str, float] | None] | None = None
        for reading in readings:
            try:
                self._check_device(reading.device, health.config.id)
                self._check_seq(health, reading.seq, reading.ts)
            except WireError as exc:
                faults.append(exc)
                continue
            # Received, whatever its values: a reading left out below is no gap, and its
            # sequence number repeated is a duplicate. The stamp only ever rises: a device
            # clock set back must not make copies of earlier readings look later (_check_seq).
            health.last_seq = reading.seq
            if health.last_ts is None or reading.ts > health.last_ts:
                health.last_ts = reading.ts
            values = reading.values
            faulty = health.faulty
            try:
                if len(health.last_values) + len(faulty) + len(values) > METRICS_PER_DEVICE:
                    values = self._known_metrics(health, reading.device, values, faults)
            except WireError as exc:
                faults.append(exc)
                continue
            # A value a sensor cannot produce is its channel's fault, not a reading (taken as
            # one, a negative %LEL could clear a gas alarm): left out of the reading, and
            # passed on beside it, so the rules fault that channel (device-out-of-range) and go
            # on judging the device's good ones.
            bad = outside_range(values)
            if bad is not None:
                values, _ = split_by_range(values)
                faults.append(_out_of_range(bad))
                faulty.update(name for name in bad if name not in health.last_values)
                if outside is None:
                    outside = [None] * len(accepted)
            if faulty:  # a name with a good value at last is in last_values below
                faulty.difference_update(values)
            if values is not reading.values:
                reading = msgspec.structs.replace(reading, values=values)
            health.last_seen = now
            health.state = "online"
            health.last_values.update(values)
            self.counters["readings"] += 1
            accepted.append(reading)
            if outside is not None:
                outside.append(bad)
        return accepted, outside

    @staticmethod
    def _known_metrics(
        health: DeviceHealth, device: str, values: dict[str, float], faults: list[WireError]
    ) -> dict[str, float]:
        """``values``, less names new to the device past METRICS_PER_DEVICE: its metrics are
        kept (last values, the rules' tracks) for as long as the gateway runs, and firmware
        naming ever new ones must not grow them for months, nor take the known ones (a gas
        level) down with them. None left: rejected."""
        known, faulty = health.last_values, health.faulty
        room = METRICS_PER_DEVICE - len(known) - len(faulty)
        kept: dict[str, float] = {}
        for name, value in values.items():
            if name in known or name in faulty:
                kept[name] = value
            elif room > 0:
                kept[name] = value
                room -= 1
        limit = f"{device} has sent {METRICS_PER_DEVICE} different metrics, the limit"
        if not kept:
            raise WireError(Reason.TOO_MANY_ITEMS, f"{limit}; this reading names only new ones")
        if len(kept) == len(values):
            return values
        left = ", ".join(sorted(set(values) - set(kept)))
        faults.append(WireError(Reason.TOO_MANY_ITEMS, f"{limit}: {left} left out"))
        return kept

    def _check_seq(self, health: DeviceHealth, seq: int, ts: datetime) -> None:
        last = health.last_seq
        if last is not None and seq <= last:
            # Stamped later than any reading received, it is no copy nor a late message:
            # the device has restarted (and its first readings after the reboot were lost).
            # Else within the reorder window it is a repeat or a late message; far behind,
            # or back at 0, a restart all the same.
            later = health.last_ts is not None and ts > health.last_ts
            if seq == last and not later:
                raise WireError(Reason.DUPLICATE, f"seq {seq} was already received")
            if seq > 0 and last - seq <= REORDER_WINDOW and not later:
                raise WireError(Reason.OUT_OF_ORDER, f"seq {seq} arrived after seq {last}")
            self.counters["device_restarts"] += 1
        elif last is not None and seq > last + 1:
            self.counters["seq_gaps"] += seq - last - 1


def _out_of_range(bad: dict[str, float]) -> WireError:
    details = []
    for name, value in bad.items():
        known = metric(name)
        assert known is not None  # outside_range knows it
        details.append(
            f"{name} = {value} is outside the sensor's physical range "
            f"{known.low:g}..{known.high:g} {known.unit}"
        )
    return WireError(
        Reason.VALUE_OUT_OF_RANGE,
        "; ".join(details) + " (left out; the device's rules fault that channel)",
    )


def _left_out(faults: list[WireError], readings: int) -> WireError:
    """One letter for what a message had left out: the first fault's reason, and each
    fault's detail."""
    if len(faults) == 1:
        return faults[0]
    details = "; ".join(fault.detail for fault in faults)
    return WireError(faults[0].reason, f"{len(faults)} faults in {readings} readings: {details}")
