"""The edge agent as two processes ("parts", edge/parts.py), run as an installer runs it
(`anmin edge run`), on a real Mosquitto with the hub: both parts raise their flats' alarms
under one gateway identity, the hub's acks empty both outboxes, one heartbeat speaks for
both, a part that dies stops the agent, and a part left by a run with more parts sends what
it held and goes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus import MqttLink
from bus.broker import Mosquitto
from edge.config import DeviceConfig, part_of
from tests.conftest import wait_for
from tests.integration.edge_support import (
    BUILDING,
    GATEWAY,
    SITE,
    Recorder,
    gas_reading,
    publish_surely,
    running,
    start_edge,
)
from tests.integration.hub_support import hub_app, hub_running
from wire import AlertEvent, Codec, Heartbeat, topics
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

UNITS = [str(101 + i) for i in range(10)]
ALERT = topics.gateway_topic(Channel.ALERT, SITE, GATEWAY)
HEARTBEAT = topics.gateway_topic(Channel.HEARTBEAT, SITE, GATEWAY)


def _gas(unit: str) -> str:
    return f"gas-{unit}"


def _in_part(index: int, parts: int = 2) -> str:
    """A gas sensor whose flat falls in part ``index``."""
    for unit in UNITS:
        if part_of(DeviceConfig(id=_gas(unit), kind="gas", unit=unit), parts) == index:
            return _gas(unit)
    raise AssertionError(f"no unit of {UNITS} falls in part {index}")


def _config(tmp_path: Path, mosquitto: Mosquitto, parts: int) -> Path:
    devices = "\n".join(f'  - {{id: {_gas(u)}, kind: gas, unit: "{u}"}}' for u in UNITS)
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""\
site: {SITE}
gateway: {GATEWAY}
building: {BUILDING}
data_dir: {tmp_path / "edge-data"}
broker: {{host: {mosquitto.broker.host}, port: {mosquitto.broker.port}}}
parts: {parts}
devices:
{devices}
rules:
  gas: {{low: 10, high: 25, hold_low_s: 1, hold_high_s: 1, clear_below: 5, hold_clear_s: 5}}
uplink_retry_s: 0.3
heartbeat_s: 1
"""
    )
    return path


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class Gateway:
    """What the hub sees of the gateway: alerts and heartbeats; and devices to publish as."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.codec = Codec()
        self.watcher = Recorder(mosquitto.broker, ALERT, HEARTBEAT, client_id="test-watcher")
        self.device = MqttLink(mosquitto.broker, client_id="test-devices")
        self.seq = 0

    def alerts(self) -> list[AlertEvent]:
        now = datetime.now(UTC)
        return [self.codec.decode(m.payload, AlertEvent, now) for m in self.watcher.on(ALERT)]

    def heartbeat(self) -> Heartbeat | None:
        beats = [m for m in self.watcher.on(HEARTBEAT) if m.payload]
        if not beats:
            return None
        return self.codec.decode(beats[-1].payload, Heartbeat, datetime.now(UTC), check_time=False)

    def reporting(self) -> int:
        """How many parts the last heartbeat had figures from."""
        beat = self.heartbeat()
        return 0 if beat is None else beat.counters.get("parts_reporting", 0)

    async def leak(self, device: str) -> None:
        """High gas at ``device`` until its alarm is raised."""
        while not any(a.device == device and a.phase == "raised" for a in self.alerts()):
            await publish_surely(
                self.device,
                topics.reading(SITE, GATEWAY, device),
                gas_reading(self.seq, 30.0, device),
            )
            self.seq += 1
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _watching(mosquitto: Mosquitto) -> AsyncIterator[Gateway]:
    gateway = Gateway(mosquitto)
    async with running(gateway.watcher.link.run(), gateway.device.run()):
        assert await gateway.watcher.link.wait_connected(10)
        assert await gateway.device.wait_connected(10)
        yield gateway


def _stop(agent: subprocess.Popen[bytes]) -> int:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()


async def test_two_parts_raise_every_flats_alarm_as_one_gateway(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    first, second = _in_part(0), _in_part(1)
    agent = start_edge(_config(tmp_path, mosquitto, parts=2))
    try:
        async with _watching(mosquitto) as gateway:
            await wait_for(lambda: gateway.heartbeat() is not None, what="the agent online")
            assert len(_children(agent.pid)) == 1, "part 1 runs in a process of its own"
            await gateway.leak(first)
            await gateway.leak(second)
            async with hub_running(hub_app(mosquitto, tmp_path)) as hub:

                async def stored() -> bool:
                    return len((await hub.get("/api/alerts")).json()) >= 2

                await wait_for(stored, timeout=30, what="both alerts at the hub")
                alerts = (await hub.get("/api/alerts")).json()

                def settled() -> bool:
                    beat = gateway.heartbeat()
                    return (
                        beat is not None
                        and beat.counters.get("parts_reporting") == 2
                        and beat.outbox_depth == 0
                        and beat.devices_online == 2  # one sensor of each part reported
                        and beat.counters.get("readings", 0) >= gateway.seq
                    )

                # One heartbeat, part 0's, with both parts' figures: each outbox emptied by
                # the hub's acks, and every reading either part took counted.
                await wait_for(settled, timeout=30, what="both outboxes empty, all readings")
            beat = gateway.heartbeat()
            assert beat is not None and beat.counters["parts"] == 2
            assert beat.counters["alerts.raised"] == 2
            # No part reports the other's devices as unknown.
            assert not any(name.startswith("rejected.") for name in beat.counters)
        assert sorted(a["device"] for a in alerts) == sorted([first, second])
        assert {a["phase"] for a in alerts} == {"raised"}
        assert len({a["id"] for a in alerts}) == 2
    finally:
        assert _stop(agent) == 0, agent.stderr.read() if agent.stderr else ""


async def test_a_part_that_dies_stops_the_whole_agent(mosquitto: Mosquitto, tmp_path: Path) -> None:
    agent = start_edge(_config(tmp_path, mosquitto, parts=2))
    try:
        async with _watching(mosquitto) as gateway:
            await wait_for(lambda: gateway.reporting() == 2, what="both parts reporting")
            (part,) = _children(agent.pid)
            os.kill(part, signal.SIGKILL)
            # Stopped whole, for the service manager to start it again, whole.
            await wait_for(lambda: agent.poll() is not None, timeout=30, what="the agent stopped")
        assert agent.returncode != 0
    finally:
        _stop(agent)


async def test_a_part_left_by_more_parts_sends_what_it_held_and_goes(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    second = _in_part(1)
    agent = start_edge(_config(tmp_path, mosquitto, parts=2))
    try:
        async with _watching(mosquitto) as gateway:
            await wait_for(lambda: gateway.reporting() == 2, what="both parts reporting")
            await gateway.leak(second)  # no hub: it waits in part 1's outbox
            assert _stop(agent) == 0, agent.stderr.read() if agent.stderr else ""
            part_1 = tmp_path / "edge-data" / "part-1"
            assert (part_1 / "outbox.sqlite3").exists()

            agent = start_edge(_config(tmp_path, mosquitto, parts=1))
            async with hub_running(hub_app(mosquitto, tmp_path)) as hub:
                # Part 1 runs once more, owning nothing: its alarm clears (the device moved,
                # to the one part now), and both events reach the hub before it goes.
                await wait_for(lambda: not part_1.exists(), timeout=60, what="part 1 gone")
                alerts = (await hub.get("/api/alerts")).json()
            assert agent.poll() is None, "the agent runs on without the retired part"
    finally:
        assert _stop(agent) == 0, agent.stderr.read() if agent.stderr else ""
    assert [(a["device"], a["phase"]) for a in sorted(alerts, key=lambda a: a["ts"])] == [
        (second, "raised"),
        (second, "cleared"),
    ]


async def test_readings_queued_across_a_change_of_parts_reach_their_new_part(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    moved = _in_part(1)  # part 0's as the single agent's, part 1's with parts: 2
    agent = start_edge(_config(tmp_path, mosquitto, parts=1))
    try:
        async with _watching(mosquitto) as gateway:
            await wait_for(lambda: gateway.heartbeat() is not None, what="the agent online")
            assert _stop(agent) == 0, agent.stderr.read() if agent.stderr else ""
            # Restarting with parts: 2, the gateway misses nothing: the device's readings
            # wait at the broker in the single agent's session, which is part 0's now.
            for seq in range(20):
                await publish_surely(
                    gateway.device,
                    topics.reading(SITE, GATEWAY, moved),
                    gas_reading(seq, 1.0, moved),
                )
            gateway.watcher.messages.clear()
            agent = start_edge(_config(tmp_path, mosquitto, parts=2))

            def counted(name: str) -> int:
                beat = gateway.heartbeat()
                return 0 if beat is None else beat.counters.get(name, 0)

            # Part 0 hands them on to part 1, which has the device now, and it takes them.
            await wait_for(lambda: counted("readings") >= 20, timeout=30, what="20 readings")
            assert counted("handed_on") == 20
            beat = gateway.heartbeat()
            assert beat is not None
            assert not [name for name in beat.counters if name.startswith("rejected.")]
    finally:
        assert _stop(agent) == 0, agent.stderr.read() if agent.stderr else ""
