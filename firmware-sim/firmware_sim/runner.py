"""A scenario over MQTT: the engine's transmissions paced against the wall clock.

Real time (``speed=1``), N times faster, or as fast as the broker takes them (``speed=0``).
Faster than real time, the scenario is placed so that it *ends* now (``run_start``): every
timestamp is in the past by the time it is sent, so no gateway rejects it as coming from the
future, and ``--speed 60`` plays an hour in a minute.

Connections: with ``connections="device"`` every device has its own MQTT connection and so
its own last will (a retained ``offline`` status), as real devices do; with ``"gateway"``
all devices behind a gateway share one connection (for load: ten thousand connections would
measure the broker, not us), and only the first device's will is set (MQTT allows one will
per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import bus
import wire
from firmware_sim.community import Community
from firmware_sim.engine import Engine
from firmware_sim.families import SimDevice
from firmware_sim.speaker import Speaker, synthesise

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Connections = Literal["device", "gateway"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def run_start(now: datetime, duration_s: float, speed: float) -> datetime:
    """Where a run at ``speed`` starts in simulated time so that it ends at ``now``'s wall
    time (speed 1: starts now; speed 0, as fast as possible: ends now)."""
    if speed <= 0:
        return now - timedelta(seconds=duration_s)
    return now - timedelta(seconds=duration_s * (1.0 - 1.0 / speed))


@dataclass(slots=True)
class _Place:
    site: str
    gateway: str
    link: bus.MqttLink


class ScenarioRunner:
    """Publishes a community's readings, statuses and receipts; obeys commands."""

    def __init__(
        self,
        community: Community,
        broker: bus.Broker,
        *,
        speed: float = 1.0,
        connections: Connections = "device",
        reading_qos: int = 1,
        batch: int = 256,
        commands: bool = True,
        wav_dir: Path | None = None,
        client_prefix: str = "sim",
    ) -> None:
        self.community = community
        self.broker = broker
        self.engine = Engine(community)
        self.speed = speed
        self.reading_qos = reading_qos
        self.batch = batch
        self.wav_dir = wav_dir
        self.codec = wire.Codec()
        self.counters: Counter[str] = Counter()
        self.devices: dict[str, SimDevice | Speaker] = {
            **{d.device_id: d for d in community.devices},
            **{s.device_id: s for s in community.speakers},
        }
        self.finished = asyncio.Event()
        self.play_seconds = 0.0
        self._places: dict[str, _Place] = {}
        self._links: list[bus.MqttLink] = []
        self._topics: dict[str, str] = {}
        for (site, gateway), ids in community.gateways().items():
            for device_id in ids:
                self._topics[device_id] = wire.topics.reading(site, gateway, device_id)
            if connections == "gateway":
                link = self._link(site, gateway, ids, commands, f"{client_prefix}-{site}-{gateway}")
                for device_id in ids:
                    self._places[device_id] = _Place(site, gateway, link)
            else:
                for device_id in ids:
                    link = self._link(
                        site, gateway, [device_id], commands, f"{client_prefix}-{device_id}"
                    )
                    self._places[device_id] = _Place(site, gateway, link)

    def _link(
        self, site: str, gateway: str, ids: list[str], commands: bool, client_id: str
    ) -> bus.MqttLink:
        first = ids[0]

        def will() -> bus.LastWill:
            status = self.devices[first].status(utc_now(), "offline")
            topic = wire.topics.status(site, gateway, first)
            return bus.LastWill(topic, self.codec.encode(status), qos=1, retain=True)

        async def announce() -> None:
            for device_id in ids:
                await self._status(device_id, "online")

        link = bus.MqttLink(
            self.broker,
            client_id=client_id,
            subscriptions=(
                [(wire.topics.command(site, gateway, d), 1) for d in ids] if commands else []
            ),
            handler=self._on_message,
            will=will,
            on_connect=announce,
        )
        self._links.append(link)
        return link

    async def run(self) -> None:
        """Connect, play the scenario to its end, mark every device offline, disconnect."""
        async with asyncio.TaskGroup() as tasks:
            link_tasks = [tasks.create_task(link.run()) for link in self._links]
            try:
                for link in self._links:
                    await link.connected.wait()
                began = asyncio.get_running_loop().time()
                await self._play()
                # The readings alone, without connecting and the statuses: what the bench rates.
                self.play_seconds = asyncio.get_running_loop().time() - began
                await self.announce_offline()
            finally:
                self.finished.set()
                for task in link_tasks:
                    task.cancel()

    async def announce_offline(self) -> None:
        """Retained ``offline`` for every device: a clean disconnect fires no last will."""
        for device_id in self.devices:
            await self._status(device_id, "offline")

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        start = self.community.start
        t0 = loop.time()
        pending: list[asyncio.Future[None]] = []
        for tx in self.engine.transmissions():
            if self.speed > 0:
                due = t0 + (tx.at - start).total_seconds() / self.speed
                wait = due - loop.time()
                if wait > 0:
                    if pending:
                        await self._flush(pending)
                    await asyncio.sleep(wait)
            place = self._places[tx.device]
            payload = tx.payload if tx.reading is None else self.codec.encode(tx.reading)
            if self.reading_qos == 0:
                # Load at QoS 0: hand it to the socket, no per-message confirmation.
                try:
                    place.link.publish_nowait(self._topics[tx.device], payload or b"")
                    self.counters["readings_published"] += 1
                except bus.NotConnected:
                    self.counters["readings_lost"] += 1
                if self.speed <= 0 and self.counters["readings_published"] % 500 == 0:
                    await asyncio.sleep(0)  # let the socket drain now and then
                continue
            pending.append(
                asyncio.ensure_future(
                    place.link.publish(
                        self._topics[tx.device], payload or b"", qos=self.reading_qos
                    )
                )
            )
            if len(pending) >= self.batch:
                await self._flush(pending)
        if pending:
            await self._flush(pending)

    async def _flush(self, pending: list[asyncio.Future[None]]) -> None:
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.counters["readings_lost"] += 1
            else:
                self.counters["readings_published"] += 1
        pending.clear()

    async def _status(self, device_id: str, state: Literal["online", "offline"]) -> None:
        place = self._places[device_id]
        status = self.devices[device_id].status(utc_now(), state)
        topic = wire.topics.status(place.site, place.gateway, device_id)
        try:
            await place.link.publish(topic, self.codec.encode(status), qos=1, retain=True)
            self.counters["statuses_published"] += 1
        except bus.BusError:
            self.counters["publish_failed"] += 1

    async def _on_message(self, incoming: bus.Incoming) -> None:
        now = utc_now()
        try:
            topic = wire.topics.parse(incoming.topic)
            # No timestamp window: a device obeys its gateway whatever either clock says (a
            # siren refused because the gateway's clock is ahead would be a silent alarm).
            cmd = self.codec.decode(incoming.payload, wire.Command, now, check_time=False)
        except wire.WireError as exc:
            self.counters["commands_rejected"] += 1
            self.counters[f"commands_rejected.{exc.reason}"] += 1
            return
        device = self.devices.get(topic.device or "")
        if device is None or cmd.device != device.device_id:
            self.counters["commands_rejected"] += 1
            return
        self.counters["commands_applied"] += 1
        if isinstance(device, Speaker):
            receipt = device.apply(cmd, now)
            if receipt is None:
                return
            if self.wav_dir is not None and cmd.broadcast is not None:
                wav = self.wav_dir / f"{cmd.broadcast.id}-{device.device_id}.wav"
                await asyncio.to_thread(synthesise, cmd.broadcast.text, cmd.broadcast.language, wav)
            place = self._places[device.device_id]
            out = wire.topics.device_receipt(place.site, place.gateway, device.device_id)
            with contextlib.suppress(bus.BusError):
                await place.link.publish(out, self.codec.encode(receipt), qos=1)
                self.counters["receipts_published"] += 1
            return
        device.apply(cmd, now)
        await self._status(device.device_id, "online")
