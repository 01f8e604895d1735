"""Bad input at the gateway: each kind has its own reason on the deadletter topic and a
counter, and good readings keep flowing around it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from bus.broker import Mosquitto
from tests.conftest import wait_for
from tests.integration.edge_support import GATEWAY, SITE, Recorder, make_agent, running
from wire import Codec, DeadLetter, Reading, topics
from wire.topics import Channel

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GAS = "gas-b1-101"


def good(seq: int) -> bytes:
    reading = Reading(device=GAS, seq=seq, ts=datetime.now(UTC), values={"gas_lel": 0.5})
    return msgspec.json.encode(reading)


def raw(seq: object, *, ts: str | None = None, values: str = '{"gas_lel":0.5}') -> bytes:
    stamp = ts or datetime.now(UTC).isoformat()
    return f'{{"device":"{GAS}","seq":{seq},"ts":"{stamp}","values":{values}}}'.encode()


async def test_each_malformed_payload_is_dead_lettered_with_its_own_reason(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    deadletter_topic = topics.gateway_topic(Channel.DEADLETTER, SITE, GATEWAY)
    recorder = Recorder(mosquitto.broker, deadletter_topic)
    reading_topic = topics.reading(SITE, GATEWAY, GAS)
    prefix = f"anmin/v1/{SITE}/{GATEWAY}/dev"  # built by hand on purpose: bad topics
    # (topic, payload, expected reason); a good reading follows each one.
    cases: list[tuple[str, bytes, str]] = [
        (reading_topic, b'{"device": "gas-b1-101", "seq": ', "malformed_json"),
        (reading_topic, raw(1, values='{"gas_lel":"high"}'), "wrong_type"),
        (reading_topic, raw(1, values='{"gas_lel":NaN}'), "non_finite_number"),
        (reading_topic, b"[" + b" " * 70_000 + b"]", "payload_too_large"),
        (reading_topic, b"", "empty_payload"),
        (reading_topic, b'{"device":"\xff\xfe"}', "not_utf8"),
        (reading_topic, b"12", "not_an_object"),
        (reading_topic, f'{{"device":"{GAS}","values":{{}}}}'.encode(), "missing_field"),
        (reading_topic, raw(-5), "value_out_of_range"),
        (reading_topic, b'{"v":9,' + raw(1)[1:], "unsupported_version"),
        (f"{prefix}/{GAS}/bogus", good(1), "bad_topic"),
        (topics.reading(SITE, GATEWAY, "stranger"), good(1), "unknown_device"),
        (topics.reading(SITE, GATEWAY, "spk-b1"), good(1), "device_mismatch"),
        (reading_topic, b"DUP", "duplicate"),
        (reading_topic, b"OLD", "out_of_order"),
    ]
    async with running(agent.run(), recorder.link.run()):
        assert await agent.local.wait_connected(10)
        assert await recorder.link.wait_connected(10)
        publisher = Recorder(mosquitto.broker, client_id="test-publisher")
        async with running(publisher.link.run()):
            assert await publisher.link.wait_connected(10)
            seq = 0
            sent: dict[int, bytes] = {}  # each good reading as sent, to send again
            for topic, payload, _ in cases:
                # A copy of the last reading (a redelivery), and of one before it (late); a
                # repeated seq stamped later would be a device's restart, not a copy.
                if payload == b"DUP":
                    payload = sent[seq]
                elif payload == b"OLD":
                    payload = sent[seq - 1]
                await publisher.link.publish(topic, payload, qos=1)
                seq += 1
                sent[seq] = good(seq)
                await publisher.link.publish(reading_topic, sent[seq], qos=1)
            last = seq
            health = agent.ingest.devices[GAS]
            await wait_for(lambda: health.last_seq == last, what="the last good reading")
            await wait_for(lambda: len(recorder.messages) >= len(cases), what="every dead letter")
    codec = Codec()
    now = datetime.now(UTC)
    letters = [codec.decode(m.payload, DeadLetter, now) for m in recorder.messages]
    assert [letter.reason for letter in letters] == [reason for _, _, reason in cases]
    assert len({letter.reason for letter in letters}) == len(cases)
    assert all(letter.detail for letter in letters)
    # Every good reading got through, around the bad ones.
    assert agent.ingest.counters["readings"] == len(cases)
    for _, _, reason in cases:
        assert (
            agent.ingest.counters[f"rejected.{reason}"] + agent.counters[f"rejected.{reason}"] >= 1
        ), reason
    agent.close()


async def test_an_unknown_device_is_reported_once_not_per_message(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    recorder = Recorder(mosquitto.broker, topics.gateway_topic(Channel.DEADLETTER, SITE, GATEWAY))
    stranger = topics.reading(SITE, GATEWAY, "stranger")
    async with running(agent.run(), recorder.link.run()):
        assert await agent.local.wait_connected(10)
        assert await recorder.link.wait_connected(10)
        for seq in range(5):
            await agent.local.publish(stranger, good(seq))
        await agent.local.publish(topics.reading(SITE, GATEWAY, GAS), good(0))
        await wait_for(lambda: agent.ingest.counters["readings"] == 1, what="a good reading")
        await wait_for(lambda: agent.ingest.counters["rejected.unknown_device"] == 5, what="count")
    assert len(recorder.messages) == 1
    agent.close()


async def test_a_reading_from_a_wrong_clock_is_judged_not_dropped(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A device clock two days ahead (or two months behind) still reports a leak: the rules
    judge readings by their arrival on the gateway's clock, and the skew is counted."""
    agent = make_agent(mosquitto.broker, tmp_path / "edge")
    recorder = Recorder(mosquitto.broker, topics.gateway_topic(Channel.DEADLETTER, SITE, GATEWAY))
    topic = topics.reading(SITE, GATEWAY, GAS)
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    old = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    async with running(agent.run(), recorder.link.run()):
        assert await agent.local.wait_connected(10)
        assert await recorder.link.wait_connected(10)
        seq = 0
        for seq in range(1, 200):  # a leak reported every 50 ms, the clock wrong both ways
            stamp = future if seq % 2 else old
            await agent.local.publish(topic, raw(seq, ts=stamp, values='{"gas_lel":30}'))
            if agent.counters["alerts.raised"]:
                break
            await asyncio.sleep(0.05)  # the device's reporting interval, not a wait for a result
        await wait_for(lambda: agent.ingest.counters["readings"] >= seq, what="every reading")
    assert agent.counters["alerts.raised"] == 1
    assert agent.ingest.counters["clock_skewed"] == seq
    assert recorder.messages == []  # accepted, so no dead letter
    agent.close()
