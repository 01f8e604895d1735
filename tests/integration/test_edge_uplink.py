"""The uplink to the hub: a replay waiting for the hub's ack never holds a new alarm back."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bus import MqttLink
from bus.broker import Mosquitto
from edge import EdgeAgent, parse
from tests.conftest import wait_for
from tests.integration.edge_support import (
    GATEWAY,
    SITE,
    Recorder,
    edge_config_yaml,
    gas_reading,
    publish_surely,
    running,
)
from wire import Ack, AlertEvent, Codec, topics
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_new_alarm_goes_out_while_a_replay_waits_for_its_ack(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    second = "gas-b1-102"
    # A long retry: the replay below waits 60 s for an ack that never comes (no hub runs).
    config = edge_config_yaml(mosquitto.broker, tmp_path / "edge", retry_s=60).replace(
        "  - {id: spk-b1, kind: speaker}\n",
        f'  - {{id: spk-b1, kind: speaker}}\n  - {{id: {second}, kind: gas, unit: "102"}}\n',
    )
    agent = EdgeAgent(parse(config))
    alert_topic = topics.gateway_topic(Channel.ALERT, SITE, GATEWAY)
    hub = Recorder(mosquitto.broker, alert_topic, client_id="test-hub-watch")
    device = MqttLink(mosquitto.broker, client_id="device-gas")
    codec = Codec()

    def alerts_from(name: str) -> list[AlertEvent]:
        events = [
            codec.decode(m.payload, AlertEvent, datetime.now(UTC), check_time=False)
            for m in hub.messages
        ]
        return [e for e in events if e.device == name]

    async def leak(name: str, within_s: float) -> None:
        """The sensor reports a leak every 0.1 s (the rule holds it 1 s) until it is sent."""
        deadline = time.monotonic() + within_s
        for seq in itertools.count():
            if alerts_from(name):
                return
            assert time.monotonic() < deadline, f"no alert from {name} within {within_s} s"
            await publish_surely(
                device, topics.reading(SITE, GATEWAY, name), gas_reading(seq, 30.0, name)
            )
            await asyncio.sleep(0.1)

    async with running(agent.run(), hub.link.run(), device.run()):
        assert await hub.link.wait_connected(10) and await device.wait_connected(10)
        assert await agent.upstream.wait_connected(10)
        await leak("gas-b1-101", within_s=30)
        # A hub announces itself: every unacknowledged alert is replayed now, and the replay
        # waits (60 s) for an ack that no hub sends.
        await publish_surely(hub.link, topics.hub_online(), b"online")
        await wait_for(lambda: agent.counters["uplink.resent"] >= 1, what="the replay")
        # Within 10 s, not after the replay's 60 s: nothing but the rule's hold delays it.
        await leak(second, within_s=10)
    assert agent.counters["uplink.resent"] == 1  # the replay still waits for its ack
    agent.close()


async def test_a_newer_event_of_an_alarm_waits_for_the_older_ones_ack(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """One alarm's events reach the hub in their order: while its "raised" is replayed
    unacknowledged, its "updated" is held, and goes once the hub acknowledges the first."""
    gas, other = "gas-b1-101", "gas-b1-102"
    config = edge_config_yaml(mosquitto.broker, tmp_path / "edge", retry_s=60).replace(
        "  - {id: spk-b1, kind: speaker}\n",
        f'  - {{id: spk-b1, kind: speaker}}\n  - {{id: {other}, kind: gas, unit: "102"}}\n',
    )
    agent = EdgeAgent(parse(config))
    alert_topic = topics.gateway_topic(Channel.ALERT, SITE, GATEWAY)
    hub = Recorder(mosquitto.broker, alert_topic, client_id="test-hub-watch")
    device = MqttLink(mosquitto.broker, client_id="device-gas")
    codec = Codec()

    def phases() -> list[tuple[str, str]]:
        now = datetime.now(UTC)
        events = [codec.decode(m.payload, AlertEvent, now, check_time=False) for m in hub.messages]
        return [(e.phase, e.id) for e in events if e.device == gas]

    seqs = itertools.count()

    async def report(
        lel: float, until: Callable[[], bool], within_s: float, name: str = gas
    ) -> None:
        """The sensor reports every 0.1 s (the rule holds a level 1 s) until ``until``."""
        deadline = time.monotonic() + within_s
        while not until():
            assert time.monotonic() < deadline, f"nothing came of {lel} %LEL in {within_s} s"
            reading = gas_reading(next(seqs), lel, name)
            await publish_surely(device, topics.reading(SITE, GATEWAY, name), reading)
            await asyncio.sleep(0.1)

    async with running(agent.run(), hub.link.run(), device.run()):
        assert await hub.link.wait_connected(10) and await device.wait_connected(10)
        assert await agent.upstream.wait_connected(10)
        await report(15.0, lambda: bool(phases()), within_s=30)  # the low level: raised
        [(phase, raised_id)] = phases()
        assert phase == "raised"
        await publish_surely(hub.link, topics.hub_online(), b"online")
        await wait_for(lambda: agent.counters["uplink.resent"] >= 1, what="the replay")
        # The high level: "updated" is made, and held while "raised" waits for its ack.
        await report(30.0, lambda: agent.counters["alerts.updated"] >= 1, within_s=30)
        await wait_for(lambda: agent.counters["uplink.held_for_order"] >= 1, what="held")
        assert [p for p, _ in phases()] == ["raised", "raised"]  # sent, then replayed
        # Another alarm is not held by this one's order: its alarm sends it at once.
        at_once = agent.counters["uplink.at_once"]
        await report(30.0, lambda: agent.counters["alerts.raised"] >= 2, within_s=30, name=other)
        await wait_for(lambda: agent.counters["uplink.at_once"] > at_once, what="sent at once")
        assert [p for p, _ in phases()] == ["raised", "raised"]  # the update still held
        ack = Ack(ids=[raised_id], ts=datetime.now(UTC))
        await publish_surely(
            hub.link, topics.gateway_topic(Channel.ACK, SITE, GATEWAY), codec.encode(ack)
        )
        await wait_for(lambda: len(phases()) == 3, timeout=10, what="the update, after the ack")
    assert [p for p, _ in phases()] == ["raised", "raised", "updated"]


async def test_alarms_raised_together_reach_the_hub_once_each_in_the_order_raised(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A new alert goes from the alarm's own task when nothing waits before it, else through
    the uplink; alarms raised at once take either way, and none is sent twice or overtaken."""
    names = [f"gas-b1-1{i:02d}" for i in range(1, 7)]
    extra = "".join(f'  - {{id: {n}, kind: gas, unit: "{n[-3:]}"}}\n' for n in names[1:])
    config = edge_config_yaml(mosquitto.broker, tmp_path / "edge").replace(
        "  - {id: spk-b1, kind: speaker}\n", "  - {id: spk-b1, kind: speaker}\n" + extra
    )
    stored: list[str] = []
    agent = EdgeAgent(parse(config))
    add = agent.outbox.add

    def recorded(id: str, *args: Any, **kwargs: Any) -> bool:
        stored.append(id)
        return add(id, *args, **kwargs)

    agent.outbox.add = recorded  # type: ignore[method-assign]
    hub = Recorder(
        mosquitto.broker, topics.gateway_topic(Channel.ALERT, SITE, GATEWAY), client_id="hub"
    )
    device = MqttLink(mosquitto.broker, client_id="device-gas")
    codec = Codec()

    def sent() -> list[str]:
        now = datetime.now(UTC)
        return [codec.decode(m.payload, AlertEvent, now, check_time=False).id for m in hub.messages]

    async with running(agent.run(), hub.link.run(), device.run()):
        assert await hub.link.wait_connected(10) and await device.wait_connected(10)
        assert await agent.upstream.wait_connected(10)
        deadline = time.monotonic() + 30
        for seq in itertools.count():  # every sensor reports a leak each 0.1 s (held 1 s)
            if agent.counters["alerts.raised"] >= len(names):
                break
            assert time.monotonic() < deadline, "the leaks raised no alarms"
            for name in names:
                reading = gas_reading(seq, 30.0, name)
                await publish_surely(device, topics.reading(SITE, GATEWAY, name), reading)
            await asyncio.sleep(0.1)
        await wait_for(lambda: len(sent()) >= len(stored), what="every alert at the hub")
        await wait_for(lambda: not agent._unmarked, what="the last send marked")
    assert sent() == stored  # once each, in the order committed
    assert agent.counters["uplink.sent"] == len(stored)
    # Which way each took is the disk's and the uplink's timing: on a loaded machine the
    # uplink's pass can overlap every commit, and all go through it (seen in CI). The alarm's
    # own way is tested alone above; here, that neither way sends twice or out of order.
    agent.close()


async def test_an_alarm_sent_at_once_is_timed_from_its_reading_read_to_its_event_written(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """/metrics: anmin_edge_alarm_seconds (reading read off the socket -> event written for
    the hub) and, of it, anmin_edge_alarm_commit_seconds, for each alarm its own task sent."""
    from prometheus_client import CollectorRegistry, generate_latest

    from edge.metrics import AgentCollector

    flats = ["gas-b1-102", "gas-b1-103", "gas-b1-104"]
    extra = "".join(f'  - {{id: {d}, kind: gas, unit: "{d[-3:]}"}}\n' for d in flats)
    config = edge_config_yaml(mosquitto.broker, tmp_path / "edge").replace(
        "  - {id: spk-b1, kind: speaker}\n", "  - {id: spk-b1, kind: speaker}\n" + extra
    )
    # No hold: the reading raises the alarm itself (a hold's end may come at a tick, which
    # has no reading to time from).
    config = config.replace("hold_low_s: 1, hold_high_s: 1", "hold_low_s: 0, hold_high_s: 0")
    agent = EdgeAgent(parse(config))
    hub = Recorder(mosquitto.broker, topics.gateway_topic(Channel.ALERT, SITE, GATEWAY))
    device = MqttLink(mosquitto.broker, client_id="device-gas")
    async with running(agent.run(), hub.link.run(), device.run()):
        assert await hub.link.wait_connected(10) and await device.wait_connected(10)
        assert await agent.upstream.wait_connected(10)
        # An alarm goes at once unless an uplink pass read the outbox meanwhile (rare): one
        # flat's leak after another until one has.
        for name in flats:
            deadline = time.monotonic() + 30
            for seq in itertools.count():
                if any(name.encode() in m.payload for m in hub.messages):
                    break
                assert time.monotonic() < deadline, f"no alert from {name} within 30 s"
                await publish_surely(
                    device, topics.reading(SITE, GATEWAY, name), gas_reading(seq, 30.0, name)
                )
                await asyncio.sleep(0.1)
            if agent.alarm_latency.count:
                break
        # Counted once its PUBACK is in (the histograms, once it is written).
        await wait_for(lambda: agent.counters["uplink.at_once"] >= agent.alarm_latency.count)
    at_once = agent.counters["uplink.at_once"]
    alarm, commit = agent.alarm_latencies()
    assert alarm.count >= 1, "no alarm of three went at once"
    assert alarm.count == commit.count == at_once  # every one timed, none from a tick
    assert 0 < commit.sum < alarm.sum < 5 * at_once  # the commit is part of the whole
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    text = generate_latest(registry).decode()
    where = f'gateway="{GATEWAY}",site="{SITE}"'
    assert f"anmin_edge_alarm_seconds_count{{{where}}} {float(at_once)}" in text
    assert f"anmin_edge_alarm_commit_seconds_count{{{where}}} {float(at_once)}" in text
    agent.close()
