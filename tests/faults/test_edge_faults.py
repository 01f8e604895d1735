"""One gateway under faults, on a real Mosquitto, the agent in the test process (or, for
SIGKILL, in its own): broker restart, SIGKILL, a long hub outage and a flood of malformed
input. No alarm may be lost or sent twice. Moved here from tests/integration; the whole system
under the same faults, scored against the simulator's truth, is test_system_faults.py."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus import MqttLink
from bus.broker import Mosquitto
from edge import EdgeAgent, parse
from tests.conftest import wait_for
from tests.faults.checker import Result, count_ids
from tests.integration.edge_support import (
    GATEWAY,
    SITE,
    Recorder,
    edge_config_yaml,
    make_agent,
    publish_surely,
    running,
    start_edge,
)
from tests.integration.edge_support import gas_reading as reading
from tests.integration.hub_support import hub_app, hub_running
from wire import AlertEvent, Codec, Heartbeat, topics
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GAS = "gas-b1-101"


async def test_a_broker_restart_loses_no_qos1_reading_and_no_alert(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    app = hub_app(mosquitto, tmp_path)
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    device = MqttLink(mosquitto.broker, client_id="device-gas", persistent=True)
    topic = topics.reading(SITE, GATEWAY, GAS)
    total = 400
    async with hub_running(app) as hub, running(agent.run(), device.run()):
        assert await agent.local.wait_connected(10)
        assert await device.wait_connected(10)
        for seq in range(total):
            if seq == 250:
                mosquitto.restart()  # mid-stream, while the alarm is being raised
            await publish_surely(device, topic, reading(seq, 0.5 if seq < 100 else 30.0))
            await asyncio.sleep(0.005)  # ~150 readings/s, the pace of a busy building
        health = agent.ingest.devices[GAS]
        await wait_for(lambda: health.last_seq == total - 1, timeout=30, what="the last reading")
        await wait_for(lambda: agent.outbox.depth() == 0, timeout=30, what="alerts acked")
        alerts = (await hub.get("/api/alerts")).json()
    assert mosquitto.process is not None, "the broker was restarted, not left down"
    # Every QoS 1 reading arrived; a redelivery after the restart is a counted duplicate.
    assert agent.ingest.counters["readings"] == total
    assert agent.ingest.counters["seq_gaps"] == 0
    assert agent.local.connections >= 2
    assert [a["phase"] for a in alerts] == ["raised"]
    assert alerts[0]["severity"] == "Extreme"
    # One alarm (one key) was caused; each raise of it at the hub counts.
    raises = [a["key"] for a in alerts if a["phase"] == "raised"]
    result = count_ids("edge: broker restart", {f"gas-lel:{GAS}"}, raises)
    print(f"\n{result.report()}")  # noqa: T201
    assert result.lost == 0 and result.duplicated == 0
    agent.close()


def _write_config(tmp_path: Path, mosquitto: Mosquitto) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(edge_config_yaml(mosquitto.broker, tmp_path / "edge-data"))
    return path


async def test_a_killed_agent_loses_no_alert_and_keeps_its_rule_state(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = _write_config(tmp_path, mosquitto)
    codec = Codec()
    watcher = Recorder(
        mosquitto.broker,
        topics.gateway_topic(Channel.ALERT, SITE, GATEWAY),
        topics.gateway_topic(Channel.HEARTBEAT, SITE, GATEWAY),
        client_id="test-watcher",
    )
    device = MqttLink(mosquitto.broker, client_id="device-gas", persistent=True)
    topic = topics.reading(SITE, GATEWAY, GAS)
    alert_topic = topics.gateway_topic(Channel.ALERT, SITE, GATEWAY)
    heartbeat_topic = topics.gateway_topic(Channel.HEARTBEAT, SITE, GATEWAY)

    def alert_ids() -> set[str]:
        now = datetime.now(UTC)
        return {codec.decode(m.payload, AlertEvent, now).id for m in watcher.on(alert_topic)}

    def readings_seen() -> int:
        beats = [m for m in watcher.on(heartbeat_topic) if m.payload]
        if not beats:
            return 0
        beat = codec.decode(beats[-1].payload, Heartbeat, datetime.now(UTC), check_time=False)
        return beat.counters.get("readings", 0)

    first = start_edge(config)
    seq = 0
    try:
        async with running(watcher.link.run(), device.run()):
            assert await device.wait_connected(10)
            assert await watcher.link.wait_connected(10)
            await wait_for(lambda: bool(watcher.on(heartbeat_topic)), what="the agent online")
            # A leak; no hub is running, so the alert waits in the outbox.
            while not alert_ids():
                await publish_surely(device, topic, reading(seq, 30.0))
                seq += 1
                await asyncio.sleep(0.05)
            raised = alert_ids()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)

            second = start_edge(config)
            try:
                watcher.messages.clear()
                await wait_for(lambda: bool(watcher.messages), what="the agent restarted")
                # The leak goes on for longer than the hold time: with the state lost, a
                # second alarm would be raised; with it kept, the alarm simply stands.
                for _ in range(40):
                    await publish_surely(device, topic, reading(seq, 30.0))
                    seq += 1
                    await asyncio.sleep(0.05)
                await wait_for(lambda: readings_seen() >= 30, timeout=20, what="readings")
                app = hub_app(mosquitto, tmp_path)
                async with hub_running(app) as hub:

                    async def stored() -> bool:
                        return len((await hub.get("/api/alerts")).json()) >= 1

                    await wait_for(stored, timeout=30, what="the alert at the hub")
                    alerts = (await hub.get("/api/alerts")).json()
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(timeout=20) == 0, second.stderr.read() if second.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
    result = count_ids("edge: agent SIGKILL", raised, [a["id"] for a in alerts])
    print(f"\n{result.report()}")  # noqa: T201
    assert result.lost == 0 and result.duplicated == 0
    assert {a["id"] for a in alerts} == raised
    assert alert_ids() <= raised, "the restarted agent raised the same alarm again"
    assert [a["phase"] for a in alerts] == ["raised"]


async def test_after_a_long_hub_outage_every_alert_arrives_once_and_in_order(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    devices = [f"gas-{i:02d}" for i in range(20)]
    text = edge_config_yaml(mosquitto.broker, tmp_path / "edge", retry_s=0.2).replace(
        '  - {id: gas-b1-101, kind: gas, unit: "101"}\n',
        "".join(f'  - {{id: {d}, kind: gas, unit: "{i}"}}\n' for i, d in enumerate(devices)),
    )
    agent = EdgeAgent(parse(text))
    device = MqttLink(mosquitto.broker, client_id="device-gas", persistent=True)
    async with running(agent.run(), device.run()):
        assert await device.wait_connected(10)
        assert await agent.local.wait_connected(10)
        for round_ in range(30):
            for name in devices:
                await publish_surely(
                    device, topics.reading(SITE, GATEWAY, name), reading(round_, 30.0, name)
                )
            await asyncio.sleep(0.05)
        await wait_for(lambda: agent.outbox.depth() == len(devices), what="20 alerts waiting")
        waiting = agent.outbox.ids()  # in the order they were raised
        await wait_for(lambda: agent.counters["uplink.resent"] >= 4, what="backoff resends")
        app = hub_app(mosquitto, tmp_path)
        async with hub_running(app) as hub:
            await wait_for(lambda: agent.outbox.depth() == 0, timeout=30, what="the outbox drained")
            alerts = (await hub.get("/api/alerts?limit=1000")).json()
            repeated = app.state.intake.counters["alerts_repeated"]
    result = count_ids("edge: hub away, 20 alarms", waiting, [a["id"] for a in alerts])
    print(f"\n{result.report()}")  # noqa: T201
    assert result.lost == 0 and result.duplicated == 0
    assert agent.counters["hub_online_seen"] >= 1
    assert len(alerts) == len(devices) and {a["id"] for a in alerts} == set(waiting)
    # Stored in the order they were raised. The hub stamps one arrival time on all the
    # events it stores in one transaction (a batch), so ties are no order: sorting on the time
    # put a batch's events in the API's order (newest first), which failed under load.
    received = {a["id"]: datetime.fromisoformat(a["received_at"]) for a in alerts}
    arrivals = [received[alert_id] for alert_id in waiting]
    assert arrivals == sorted(arrivals), "stored in the order they were raised"
    # At-least-once transport, exactly-once effect: any resend was recognised, not stored.
    assert repeated >= 0
    agent.close()


MALFORMED: list[tuple[str, bytes]] = [
    ("malformed_json", b'{"device": '),
    ("wrong_type", b'{"device":"gas-b1-101","seq":"x","ts":"2026-01-01T00:00:00Z","values":{}}'),
    (
        "non_finite_number",
        b'{"device":"gas-b1-101","seq":1,"ts":"2026-01-01T00:00:00Z","values":{"gas_lel":NaN}}',
    ),
    ("not_an_object", b"42"),
    ("empty_payload", b""),
    ("not_utf8", b"\xff\xfe"),
    ("missing_field", b'{"device":"gas-b1-101"}'),
    ("unsupported_version", b'{"v":7}'),
    ("payload_too_large", b"[" + b" " * 70_000 + b"]"),
]


async def test_a_flood_of_malformed_input_is_counted_exactly_and_good_readings_all_pass(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    device = MqttLink(mosquitto.broker, client_id="device-flood", persistent=True)
    topic = topics.reading(SITE, GATEWAY, GAS)
    stranger = topics.reading(SITE, GATEWAY, "stranger")
    bad_total = 100_000
    good_every = 100
    expected: Counter[str] = Counter()
    async with running(agent.run(), device.run()):
        assert await agent.local.wait_connected(10)
        assert await device.wait_connected(10)
        good = 0
        batch = []
        for i in range(bad_total):
            if i % 20 == 19:
                batch.append(device.publish(stranger, reading(i, 0.5, "stranger"), qos=1))
                expected["unknown_device"] += 1
            else:
                reason, payload = MALFORMED[i % len(MALFORMED)]
                batch.append(device.publish(topic, payload, qos=1))
                expected[reason] += 1
            if i % good_every == 0:
                batch.append(device.publish(topic, reading(good, 0.5), qos=1))
                good += 1
            if len(batch) >= 200:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)

        def rejected() -> int:
            return sum(v for k, v in agent.ingest.counters.items() if k.startswith("rejected."))

        await wait_for(lambda: rejected() == bad_total, timeout=240, what="every reject counted")
        await wait_for(lambda: agent.ingest.counters["readings"] == good, what="good readings")
    counted = {
        k.removeprefix("rejected."): v
        for k, v in agent.ingest.counters.items()
        if k.startswith("rejected.")
    }
    # Readings are not alarms: here lost/duplicated count the good readings among the junk.
    processed = agent.ingest.counters["readings"]
    result = Result(
        "edge: 100,000 malformed messages",
        expected=good,
        lost=max(0, good - processed),
        duplicated=max(0, processed - good),
    )
    print(f"\n{result.report()}")  # noqa: T201
    assert result.lost == 0 and result.duplicated == 0
    assert counted == dict(expected)
    assert agent.ingest.devices[GAS].last_seq == good - 1
    assert agent.counters["internal_errors"] == 0 and agent.local.handler_errors == 0
    agent.close()
