"""The MQTT side of the simulator: one building's devices on one connection to the broker.

The device models (``GasSensor``, ``Speaker``) are pure; this runner gives them a clock, a
timer per sensor and an ``MqttLink``, the same adapter the edge and the hub use.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import bus
import wire
from firmware_sim.gas import GasSensor
from firmware_sim.speaker import Speaker

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Device = GasSensor | Speaker
# What the simulated devices send (typed here so the sim needs no msgspec import of its own).
Outgoing = wire.Reading | wire.DeviceStatus | wire.Receipt


def utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedBuilding:
    """Runs a building's simulated devices against a broker until cancelled.

    ``counters`` tells observers (tests, the demo) what happened: readings published or lost,
    commands applied or rejected (by reason), statuses and receipts published.
    """

    def __init__(
        self,
        broker: bus.Broker,
        *,
        site: str,
        gateway: str,
        building: str,
        gas_devices: Sequence[GasSensor],
        speakers: Sequence[Speaker],
        clock: Clock = utc_now,
        codec: wire.Codec | None = None,
    ) -> None:
        self.site = wire.topics.check_id(site, "site")
        self.gateway = wire.topics.check_id(gateway, "gateway")
        self.building = wire.topics.check_id(building, "building")
        self.gas_devices = list(gas_devices)
        self.speakers = list(speakers)
        self.clock = clock
        self.codec = codec or wire.Codec()
        self.counters: Counter[str] = Counter()
        self.devices: dict[str, Device] = {}
        everyone: list[Device] = [*self.gas_devices, *self.speakers]
        for device in everyone:
            if device.device_id in self.devices:
                raise ValueError(f"device id {device.device_id!r} is used twice")
            self.devices[device.device_id] = device
        self.link = bus.MqttLink(
            broker,
            client_id=f"sim-{site}-{gateway}-{building}",
            subscriptions=[(wire.topics.command(site, gateway, d), 1) for d in self.devices],
            handler=self._on_message,
            will=self._will(),
            on_connect=self._announce_online,
        )

    def _will(self) -> bus.LastWill | None:
        # MQTT allows one will per connection, and all devices share this one, so only the
        # first device is marked offline when the simulator dies; the others keep a stale
        # retained "online". Its ts is also fixed when the will is made (at construction).
        # Real devices each have their own connection and will.
        first = next(iter(self.devices.values()), None)
        if first is None:
            return None
        topic = wire.topics.status(self.site, self.gateway, first.device_id)
        payload = self.codec.encode(first.status(self.clock(), "offline"))
        return bus.LastWill(topic, payload, qos=1, retain=True)

    async def run(self) -> None:
        """Connect, announce, report readings and obey commands until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.link.run(), name=f"{self.link.client_id}-link")
            for sensor in self.gas_devices:
                tasks.create_task(self._report(sensor), name=f"sim-{sensor.device_id}-readings")

    async def announce_offline(self) -> None:
        """Mark every device offline (retained), for a graceful stop: a clean disconnect
        does not fire the last will."""
        now = self.clock()
        for device in self.devices.values():
            await self._publish(self._status_topic(device), device.status(now, "offline"), True)

    # Devices to broker

    async def _announce_online(self) -> None:
        now = self.clock()
        for device in self.devices.values():
            await self._publish(self._status_topic(device), device.status(now), retain=True)

    async def _report(self, sensor: GasSensor) -> None:
        """A reading every ``interval_s``; while disconnected it is lost (a seq gap), as it
        would be on a device without a buffer."""
        await self.link.connected.wait()
        loop = asyncio.get_running_loop()
        topic = wire.topics.reading(self.site, self.gateway, sensor.device_id)
        due = loop.time()
        while True:
            reading = sensor.reading(self.clock())
            if await self._publish(topic, reading):
                self.counters["readings_published"] += 1
            else:
                self.counters["readings_lost"] += 1
            # Scheduled from the last due time, so slow publishes do not make readings drift.
            due = max(due + sensor.interval_s, loop.time())
            await asyncio.sleep(due - loop.time())

    async def _publish(self, topic: str, message: Outgoing, retain: bool = False) -> bool:
        try:
            await self.link.publish(topic, self.codec.encode(message), qos=1, retain=retain)
        except bus.BusError as exc:
            self.counters["publish_failed"] += 1
            log.debug("sim could not publish to %s: %s", topic, exc)
            return False
        return True

    def _status_topic(self, device: Device) -> str:
        return wire.topics.status(self.site, self.gateway, device.device_id)

    # Broker to devices

    async def _on_message(self, incoming: bus.Incoming) -> None:
        # A bad command must never take the connection (and every device on it) down.
        try:
            await self._on_command(incoming)
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("sim failed on a message to %s", incoming.topic)

    def _reject(self, reason: wire.Reason, detail: str) -> None:
        self.counters["commands_rejected"] += 1
        self.counters[f"commands_rejected.{reason}"] += 1
        log.info("sim rejected a command: %s: %s", reason, detail)

    async def _on_command(self, incoming: bus.Incoming) -> None:
        now = self.clock()
        try:
            topic = wire.topics.parse(incoming.topic)
            # No timestamp window, as in runner.py: a skewed clock must not silence a siren.
            cmd = self.codec.decode(incoming.payload, wire.Command, now, check_time=False)
        except wire.WireError as exc:
            self._reject(exc.reason, exc.detail)
            return
        device = self.devices.get(topic.device or "")
        if topic.channel is not wire.topics.Channel.CMD or device is None:
            self._reject(wire.Reason.UNKNOWN_DEVICE, f"no device here for {incoming.topic}")
            return
        if cmd.device != device.device_id:
            self._reject(
                wire.Reason.DEVICE_MISMATCH,
                f"command for {cmd.device} arrived on {device.device_id}'s topic",
            )
            return
        self.counters["commands_applied"] += 1
        if isinstance(device, GasSensor):
            device.apply(cmd, now)
            # Republish the status so the gateway sees the siren/valve really changed.
            if await self._publish(self._status_topic(device), device.status(now), retain=True):
                self.counters["statuses_published"] += 1
            return
        receipt = device.apply(cmd, now)
        if receipt is not None:
            topic_out = wire.topics.device_receipt(self.site, self.gateway, device.device_id)
            if await self._publish(topic_out, receipt):
                self.counters["receipts_published"] += 1
