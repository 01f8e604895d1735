"""Rules reload at run time without losing the state of unchanged rules."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bus.broker import Mosquitto
from rules import load_yaml
from rules.ruleset import RuleSet
from tests.conftest import wait_for
from tests.integration.edge_support import (
    GATEWAY,
    SITE,
    Recorder,
    edge_config_yaml,
    gas_reading,
    make_agent,
    publish_surely,
    running,
    start_edge,
)
from wire import topics
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GAS = "gas-b1-101"


async def test_a_reload_keeps_a_standing_alarm_and_clears_a_removed_rules_alarm(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    topic = topics.reading(SITE, GATEWAY, GAS)
    async with running(agent.run()):
        assert await agent.local.wait_connected(10)
        # A leak reported every 50 ms (bounded: the 1 s hold passes within ~20 readings).
        seq = 0
        for seq in range(1, 200):
            await publish_surely(agent.local, topic, gas_reading(seq, 30.0))
            if agent.counters["alerts.raised"]:
                break
            await asyncio.sleep(0.05)  # the device's reporting interval, not a wait for a result
        assert agent.counters["alerts.raised"] == 1, dict(agent.counters)
        # Same gas rule plus smoke: the gas alarm stands, no second "raised".
        both = load_yaml("version: 1\ninclude: [gas, smoke]\n", RuleSet, "<test>")
        assert await agent.reload_rules(both) >= 3
        await publish_surely(agent.local, topic, gas_reading(seq + 1, 30.0))
        await wait_for(lambda: agent.ingest.counters["readings"] > seq, what="a reading")
        assert agent.counters["alerts.raised"] == 1
        assert agent.counters["alerts.cleared"] == 0
        # Without the gas rule its alarm is cleared, and the siren told to stop.
        smoke_only = load_yaml("version: 1\ninclude: [smoke]\n", RuleSet, "<test>")
        await agent.reload_rules(smoke_only)
        assert agent.counters["alerts.cleared"] == 1
        await wait_for(lambda: agent.counters["commands.siren_off"] == 1, what="siren off")
    agent.close()


async def test_sighup_reloads_a_running_gateway(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(edge_config_yaml(mosquitto.broker, tmp_path / "data"))
    watcher = Recorder(
        mosquitto.broker, topics.gateway_topic(Channel.HEARTBEAT, SITE, GATEWAY), client_id="w"
    )
    agent = start_edge(config)
    try:
        async with running(watcher.link.run()):
            # A process that must import and connect first: generous on a loaded machine,
            # and a gateway that died says why at once.
            await wait_for(
                lambda: bool(watcher.messages) or agent.poll() is not None,
                timeout=60,
                what="the gateway online",
            )
            assert agent.poll() is None, agent.communicate(timeout=5)[1]
        agent.send_signal(signal.SIGHUP)
        agent.send_signal(signal.SIGTERM)
        err = agent.communicate(timeout=20)[1].decode()
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert "rules reloaded" in err
