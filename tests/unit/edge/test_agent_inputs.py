"""What the agent refuses before anything acts on it: a broadcast for another site, a retained
(replayed) reading, receipt or broadcast; and dead letters withheld for a flood are never lost
when their key is pushed out of the map that remembers them. No broker: messages are fed to
the handler, and letters are read where they would be published."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from bus import Broker
from bus.mqtt import Incoming
from edge import EdgeAgent, parse
from edge.agent import DEADLETTER_EVERY_S, DEADLETTER_KEYS
from rules.transition import Transition
from tests.integration.edge_support import edge_config_yaml
from wire import (
    Broadcast,
    Codec,
    DeadLetter,
    DeviceStatus,
    Reading,
    Receipt,
    Severity,
    topics,
    uuid7,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SITE, GATEWAY = "s1", "gw-1"  # tests/integration/edge_support.py
GAS, SPEAKER = "gas-b1-101", "spk-b1"
BROADCAST = topics.broadcast(SITE)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Harness:
    """An agent without a broker, with its dead letters, played broadcasts and forwarded
    receipts recorded."""

    def __init__(self, agent: EdgeAgent, clock: Clock) -> None:
        self.agent = agent
        self.clock = clock
        self.letters: list[DeadLetter] = []
        self.played: list[Broadcast] = []
        self.forwarded: list[Receipt] = []

    async def feed(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.agent._on_message(Incoming(topic, payload, 1, retain))


def _harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, yaml: str | None = None
) -> Harness:
    clock = Clock()
    config = yaml or edge_config_yaml(Broker("127.0.0.1", 9), tmp_path)
    harness = Harness(EdgeAgent(parse(config), clock=clock), clock)
    codec = Codec()

    def publish_nowait(topic: str, payload: bytes, *, retain: bool = False) -> None:
        harness.letters.append(codec.decode(payload, DeadLetter, clock(), check_time=False))

    async def play(broadcast: Broadcast, speakers: list[str] | None = None) -> None:
        harness.played.append(broadcast)

    async def forward(receipt: Receipt) -> None:
        harness.forwarded.append(receipt)

    monkeypatch.setattr(harness.agent.upstream, "publish_nowait", publish_nowait)
    monkeypatch.setattr(harness.agent, "_play", play)
    monkeypatch.setattr(harness.agent, "_forward_receipt", forward)
    return harness


@pytest.fixture
def edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = _harness(tmp_path, monkeypatch)
    yield harness
    harness.agent.close()


def broadcast(site: str = SITE, headline: str = "evacuate building b1") -> bytes:
    warning = Broadcast(
        id=uuid7(),
        site=site,
        ts=T0,
        severity=Severity.EXTREME,
        headline=headline,
        text="leave by the stairs",
    )
    return msgspec.json.encode(warning)


def reading(seq: int, at: datetime, values: dict[str, float] | None = None) -> bytes:
    value = Reading(device=GAS, seq=seq, ts=at, values=values or {"gas_lel": 1.0})
    return msgspec.json.encode(value)


def receipt() -> bytes:
    value = Receipt(
        broadcast_id=uuid7(),
        speaker=SPEAKER,
        outcome="played",
        ts=T0,
        content_hash=hashlib.sha256(b"warning").hexdigest(),
    )
    return msgspec.json.encode(value)


# -- D6: a broadcast for another site ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_broadcast_naming_another_site_is_refused_not_played(edge: Harness) -> None:
    await edge.feed(BROADCAST, broadcast(site="another-site", headline="not ours"))
    # Before, nothing compared the payload's site with the gateway's: it was played.
    assert edge.played == []
    assert edge.agent.counters["rejected.site_mismatch"] == 1
    [letter] = edge.letters
    assert (letter.reason, letter.topic) == ("site_mismatch", BROADCAST)
    assert "'another-site'" in letter.detail and f"'{SITE}'" in letter.detail
    await edge.feed(BROADCAST, broadcast(headline="ours"))  # this site's own is played
    assert [b.headline for b in edge.played] == ["ours"]


# -- D8: retained copies of what is never published retained -----------------------------------


@pytest.mark.anyio
async def test_a_retained_reading_is_refused_as_a_replay(edge: Harness) -> None:
    topic = topics.reading(SITE, GATEWAY, GAS)
    old = T0 - timedelta(days=10)
    # A leak from ten days ago, stored by the broker and replayed at the (re)subscribe.
    await edge.feed(topic, reading(7, old, {"gas_lel": 60.0}), retain=True)
    assert edge.agent.counters["rejected.retained"] == 1
    assert edge.agent.ingest.counters["readings"] == 0  # before: judged as current
    assert "gas_lel" not in edge.agent.engine.state.devices[GAS].metrics
    [letter] = edge.letters
    assert (letter.reason, letter.topic) == ("retained", topic)
    assert f"mosquitto_pub -r -n -t '{topic}'" in letter.detail
    # Replayed again (a reconnect within the interval): counted, one letter all the same.
    await edge.feed(topic, reading(7, old, {"gas_lel": 60.0}), retain=True)
    assert edge.agent.counters["rejected.retained"] == 2
    assert len(edge.letters) == 1
    # A live reading (retain=0, as every message matching an established subscription) goes on.
    await edge.feed(topic, reading(8, T0))
    assert edge.agent.ingest.counters["readings"] == 1
    assert edge.agent.engine.state.devices[GAS].metrics["gas_lel"].last == 1.0


@pytest.mark.anyio
async def test_a_retained_receipt_is_not_forwarded(edge: Harness) -> None:
    topic = topics.device_receipt(SITE, GATEWAY, SPEAKER)
    await edge.feed(topic, receipt(), retain=True)
    assert edge.forwarded == []
    assert edge.agent.counters["rejected.retained"] == 1
    assert [(x.reason, x.topic) for x in edge.letters] == [("retained", topic)]
    await edge.feed(topic, receipt())
    assert len(edge.forwarded) == 1


@pytest.mark.anyio
async def test_a_retained_broadcast_is_not_played(edge: Harness) -> None:
    warning = broadcast(headline="an old warning")
    await edge.feed(BROADCAST, warning, retain=True)
    assert edge.played == []  # before: played again at every restart
    assert edge.agent.counters["rejected.retained"] == 1
    [letter] = edge.letters
    assert (letter.reason, letter.topic) == ("retained", BROADCAST)
    assert f"-t '{BROADCAST}'" in letter.detail
    await edge.feed(BROADCAST, warning)  # the same one live: played
    assert [b.headline for b in edge.played] == ["an old warning"]


@pytest.mark.anyio
async def test_a_retained_status_is_taken_as_ever(edge: Harness) -> None:
    status = DeviceStatus(device=GAS, state="offline", ts=T0)
    await edge.feed(topics.status(SITE, GATEWAY, GAS), msgspec.json.encode(status), retain=True)
    assert edge.agent.ingest.devices[GAS].state == "offline"
    assert edge.agent.counters["rejected.retained"] == 0
    assert edge.letters == []


@pytest.mark.anyio
async def test_a_retained_message_on_a_bad_topic_is_reported_as_a_bad_topic(
    edge: Harness,
) -> None:
    topic = f"anmin/v1/{SITE}/{GATEWAY}/dev/{GAS}/nonsense"
    await edge.feed(topic, reading(1, T0), retain=True)
    assert edge.agent.counters["rejected.retained"] == 0
    assert [(x.reason, x.topic) for x in edge.letters] == [("bad_topic", topic)]


@pytest.mark.anyio
async def test_the_retained_letter_keeps_its_advice_whole_under_long_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, gateway, device = "s" * 64, "g" * 64, "d" * 64
    yaml = (
        edge_config_yaml(Broker("127.0.0.1", 9), tmp_path)
        .replace(f"site: {SITE}\n", f"site: {site}\n")
        .replace(f"gateway: {GATEWAY}\n", f"gateway: {gateway}\n")
    )
    long = _harness(tmp_path, monkeypatch, yaml=yaml)
    try:
        topic = topics.reading(site, gateway, device)
        await long.feed(topic, reading(1, T0), retain=True)
        [letter] = long.letters
        assert letter.reason == "retained" and letter.topic == topic
        # The topic does not fit beside the advice: the letter's own topic field is named.
        assert letter.detail.endswith("mosquitto_pub -r -n -t <this letter's topic>")
    finally:
        long.agent.close()


# -- D4: withheld letters pushed out of the map ------------------------------------------------


@pytest.mark.anyio
async def test_withheld_letters_pushed_out_of_the_map_are_sent_not_lost(edge: Harness) -> None:
    topic = topics.reading(SITE, GATEWAY, GAS)
    await edge.feed(topic, reading(5, T0))
    for _ in range(50):  # a device replaying seq 5: one letter at once, 49 withheld
        await edge.feed(topic, reading(5, T0))
    assert [(x.reason, x.repeats) for x in edge.letters] == [("duplicate", 0)]
    # Junk on ever new topics within the interval pushes the device's key out of the map.
    for n in range(DEADLETTER_KEYS):
        await edge.feed(f"anmin/v1/{SITE}/{GATEWAY}/dev/junk{n}/x", b"{}")
    edge.clock.now = T0 + timedelta(seconds=DEADLETTER_EVERY_S + 1)
    edge.agent._flush_dead_letters(edge.clock())
    duplicates = [x for x in edge.letters if x.reason == "duplicate"]
    # Before, the 49 withheld went with the key: one letter, accounting for 1 of 50.
    assert sum(1 + x.repeats for x in duplicates) == 50
    assert edge.agent.ingest.counters["rejected.duplicate"] == 50
    # Sent, as the one withheld last with 48 before it, just before the letter of the key
    # that pushed it out; the flush found nothing more.
    assert [x.repeats for x in duplicates] == [0, 48]
    assert edge.letters[-2] == duplicates[1]
    assert edge.letters[-1].topic.endswith(f"/junk{DEADLETTER_KEYS - 1}/x")
    assert len(edge.letters) == 1 + DEADLETTER_KEYS + 1


# -- D11: a value outside its sensor's physical range ------------------------------------------


@pytest.mark.anyio
async def test_a_value_outside_its_range_faults_its_channel_and_the_good_ones_are_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, ingest left such a reading out whole, so the device-out-of-range preset could
    never fire in the agent (the rules never saw the fault), and the reading's good gas value
    was lost with it."""
    base = edge_config_yaml(Broker("127.0.0.1", 9), tmp_path)
    rules = "rules:\n  include: [gas, device-health]\n"
    yaml = base.replace(base[base.index("rules:") : base.index("uplink_retry_s")], rules)
    harness = _harness(tmp_path, monkeypatch, yaml=yaml)
    raised: list[tuple[str, str]] = []

    async def alarms(transitions: list[Transition], arrived: float | None = None) -> None:
        raised.extend((t.rule, t.phase.value) for t in transitions)

    monkeypatch.setattr(harness.agent, "_alarms", alarms)
    topic = topics.reading(SITE, GATEWAY, GAS)
    try:
        await harness.feed(topic, reading(1, T0, {"gas_lel": 1.0, "temp_c": 20.0}))
        assert raised == []
        harness.clock.now = T0 + timedelta(seconds=30)
        await harness.feed(topic, reading(2, T0, {"gas_lel": 60.0, "temp_c": 400.0}))
        assert raised == [("device-out-of-range", "raised")]  # the broken channel's fault
        harness.clock.now = T0 + timedelta(seconds=33)  # past the gas alarm's 2 s hold
        await harness.feed(topic, reading(3, T0, {"gas_lel": 60.0, "temp_c": 400.0}))
        assert raised[1:] == [("gas-lel", "raised")]  # the good channel, judged all along
        [letter] = harness.letters  # the second withheld within the letters' interval
        assert letter.reason == "value_out_of_range" and "temp_c = 400.0" in letter.detail
        assert harness.agent.ingest.counters["rejected.value_out_of_range"] == 2
        track = harness.agent.engine.state.devices[GAS]
        assert track.metrics["temp_c"].last == 20.0  # the last good value, kept
        assert harness.agent.ingest.devices[GAS].last_values["temp_c"] == 20.0
        raised.clear()
        for seq in range(4, 40):  # good values again: the fault clears after its 10 min
            harness.clock.now = T0 + timedelta(seconds=30 * seq)
            await harness.feed(topic, reading(seq, T0, {"gas_lel": 1.0, "temp_c": 20.0}))
        assert ("device-out-of-range", "cleared") in raised
        assert track.faulted == {}
    finally:
        harness.agent.close()
