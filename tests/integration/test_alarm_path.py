"""The walking skeleton's alarm path, end to end on a real Mosquitto:
simulated gas sensor -> edge (rule, siren, outbox) -> hub (store, ack, broadcast) -> speaker."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bus.broker import Mosquitto
from firmware_sim.building import SimulatedBuilding
from firmware_sim.gas import GasSensor
from firmware_sim.scenarios import gas_leak_building
from firmware_sim.speaker import Speaker, content_hash
from rules.transition import Transition
from tests.conftest import wait_for
from tests.integration.edge_support import BUILDING, GATEWAY, SITE, make_agent, running
from tests.integration.hub_support import hub_app, hub_running
from wire import Reading, topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def building(mosquitto: Mosquitto, leak_after_s: float = 1.0) -> SimulatedBuilding:
    return gas_leak_building(
        mosquitto.broker, site=SITE, gateway=GATEWAY, building=BUILDING, leak_after_s=leak_after_s
    )


async def test_a_leak_gives_one_alarm_a_siren_an_ack_a_broadcast_and_a_receipt(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    app = hub_app(mosquitto, tmp_path)
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    sim = building(mosquitto)
    gas = sim.devices["gas-b1-101"]
    speaker = sim.devices["spk-b1"]
    assert isinstance(gas, GasSensor) and isinstance(speaker, Speaker)
    async with hub_running(app) as hub, running(agent.run(), sim.run()):

        async def receipt_recorded() -> bool:
            response = await hub.get("/api/broadcasts")
            return any(b["receipts"] for b in response.json())

        await wait_for(receipt_recorded, timeout=60, what="a speaker receipt at the hub")
        await wait_for(lambda: agent.outbox.depth() == 0, what="the outbox to empty on acks")
        alerts = (await hub.get("/api/alerts")).json()
        broadcasts = (await hub.get("/api/broadcasts")).json()

    # One alarm (one key), raised and escalated to Extreme; each event stored once.
    assert {a["key"] for a in alerts} == {"gas-lel:gas-b1-101"}
    assert len({a["id"] for a in alerts}) == len(alerts)
    assert "Extreme" in {a["severity"] for a in alerts}
    assert [a["phase"] for a in alerts].count("raised") == 1
    # The siren (and the valve, at the high level) reached the device.
    actions = [c.action for c in gas.commands]
    assert "siren_on" in actions and "valve_close" in actions
    # Exactly one broadcast, played by the building's speaker with the right content.
    assert len(broadcasts) == 1
    [receipt] = broadcasts[0]["receipts"]
    assert receipt["speaker"] == "spk-b1" and receipt["outcome"] == "played"
    [played] = speaker.played
    assert receipt["content_hash"] == content_hash(played)
    assert agent.counters["uplink.acked"] == len(alerts)
    agent.close()


async def test_without_the_hub_the_siren_fires_and_the_alert_waits_then_arrives_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent = make_agent(mosquitto.broker, tmp_path / "edge", retry_s=0.2)
    sim = building(mosquitto)
    gas = sim.devices["gas-b1-101"]
    assert isinstance(gas, GasSensor)
    async with running(agent.run(), sim.run()):
        await wait_for(
            lambda: agent.counters["alerts.updated"] >= 1, timeout=60, what="the high alarm"
        )
        await wait_for(lambda: gas.siren, what="the siren to sound without the hub")
        # The alert was sent (no one listened) and is still waiting for an ack.
        await wait_for(lambda: agent.counters["uplink.resent"] >= 2, what="resends")
        # Raised (Severe) and updated (Extreme): the counter goes up before the commit.
        await wait_for(lambda: len(agent.outbox.ids()) == 2, what="both events stored")
        waiting = agent.outbox.ids()

        app = hub_app(mosquitto, tmp_path)
        async with hub_running(app) as hub:
            await wait_for(lambda: agent.outbox.depth() == 0, what="the outbox to drain")

            async def broadcast_played() -> bool:
                response = await hub.get("/api/broadcasts")
                return any(b["receipts"] for b in response.json())

            await wait_for(broadcast_played, what="the broadcast's receipt")
            alerts = (await hub.get("/api/alerts")).json()
            broadcasts = (await hub.get("/api/broadcasts")).json()
    assert sorted(a["id"] for a in alerts) == sorted(waiting)  # each exactly once
    assert len(broadcasts) == 1
    agent.close()


async def test_an_extreme_alarm_the_hub_never_answers_is_announced_by_the_gateway_itself(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """No hub: after local_warning_after_s the gateway plays its own warning on the
    building's speakers (once per alarm), and the speaker's receipt waits for the hub."""
    agent = make_agent(mosquitto.broker, tmp_path / "edge", extra="local_warning_after_s: 0.5\n")
    sim = building(mosquitto)
    gas, speaker = sim.devices["gas-b1-101"], sim.devices["spk-b1"]
    assert isinstance(gas, GasSensor) and isinstance(speaker, Speaker)
    async with running(agent.run(), sim.run()):
        await wait_for(lambda: bool(speaker.played), timeout=60, what="the gateway's own warning")
        stored = agent.outbox.ids()  # the alarm's events, unacknowledged
    [warning] = speaker.played
    assert warning.headline == "本楼紧急警报（网关本地播报）" and "燃气" in warning.text
    assert warning.buildings == [BUILDING] and warning.severity.value == "Extreme"
    assert warning.cause in stored, "it names the alarm it warns of"
    assert agent.counters["local_warnings"] == 1
    agent.close()


async def test_the_siren_command_is_on_the_wire_before_the_alarm_is_stored(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Local actions first: the siren leaves while the alarm's own handler still runs, before
    the loop turns to anything else (the readings queued behind the one that raised it)."""
    agent = make_agent(mosquitto.broker, tmp_path / "edge", extra="local_warning_after_s: 600\n")
    command_topic = topics.command(SITE, GATEWAY, "gas-b1-101")
    heard = threading.Event()
    subscribed = threading.Event()
    device = paho.Client(CallbackAPIVersion.VERSION2, client_id="gas-b1-101")
    device.on_subscribe = lambda *_args: subscribed.set()
    device.on_message = lambda _c, _u, m: heard.set() if b"siren_on" in m.payload else None
    device.connect(mosquitto.broker.host, mosquitto.broker.port)
    device.subscribe(command_topic, qos=1)
    device.loop_start()
    try:
        async with running(agent.run()):
            assert await agent.local.wait_connected(10)
            assert await asyncio.to_thread(subscribed.wait, 10)
            now = datetime.now(UTC)
            transitions: list[Transition] = []
            for seq in range(3):  # past the gas rule's hold
                reading = Reading(device="gas-b1-101", seq=seq, ts=now, values={"gas_lel": 30.0})
                transitions += agent._judge(reading, now + timedelta(seconds=2 * seq))
            [raised] = [t for t in transitions if t.phase.value == "raised"]
            started = agent._start_alarm(raised)
            # The loop is held here: only a command written inside _start_alarm is heard.
            assert heard.wait(10), "the siren waited for the loop's next turn"
            await agent._finish_alarm(*started)
    finally:
        device.loop_stop()
        device.disconnect()
    agent.close()
