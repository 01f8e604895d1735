"""A CAP broadcast to a building's speakers, on a real Mosquitto: hub topic -> edge agent ->
every speaker of the building -> receipts with the script's hash -> the gateway's receipt
topic; a Cancel stops further plays; another building's broadcast is not played here."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import wire
from bus.broker import Mosquitto
from edge import EdgeAgent, parse
from firmware_sim.building import SimulatedBuilding, utc_now
from firmware_sim.speaker import Speaker
from tests.conftest import wait_for
from tests.integration.edge_support import Recorder, running
from wire import cap

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SITE, GATEWAY, BUILDING = "s1", "gw-1", "b1"
SPEAKERS = ("spk-b1-1", "spk-b1-2", "spk-b1-3")
SENDER = "anmin@s1"
FIELDS = cap.CapFields(
    sender=SENDER,
    event="燃气泄漏",
    area=cap.Area("1号楼", buildings=(BUILDING,)),
    instruction="不要使用电梯和明火。",
    translations=(
        cap.InfoText("en-US", "Gas leak", "Gas leak in building 1. Leave now.", event="Gas leak"),
    ),
)


def agent_for(mosquitto: Mosquitto, data_dir: Path) -> EdgeAgent:
    speakers = "\n".join(f"  - {{id: {s}, kind: speaker}}" for s in SPEAKERS)
    return EdgeAgent(
        parse(
            f"""\
site: {SITE}
gateway: {GATEWAY}
building: {BUILDING}
data_dir: {data_dir}
broker: {{host: {mosquitto.broker.host}, port: {mosquitto.broker.port}}}
devices:
  - {{id: gas-b1-101, kind: gas, unit: "101"}}
{speakers}
rules:
  gas: {{low: 10, high: 25, hold_low_s: 1, hold_high_s: 1, clear_below: 5, hold_clear_s: 5}}
heartbeat_s: 1
"""
        )
    )


class ShiftedClock:
    """The speakers' clock: real time plus a shift the test sets, so that a Cancel can land
    in the middle of a given rendition without waiting for it."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.shift

    def set(self, at: datetime) -> None:
        self.shift = at - utc_now()


def broadcast(**changes: Any) -> wire.Broadcast:
    now = utc_now()
    fields: dict[str, Any] = {
        "id": wire.uuid7(),
        "site": SITE,
        "ts": now,
        "severity": wire.Severity.EXTREME,
        "headline": "燃气泄漏紧急警报",
        "text": "1号楼检测到燃气泄漏，请立即离开大楼。",
        "buildings": [BUILDING],
        "repeat": 4,
        "expires": now + timedelta(hours=1),
    }
    fields.update(changes)
    return wire.Broadcast(**fields)


class Hub:
    """The hub's side of the wire for this test: publish broadcasts, read receipts."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.codec = wire.Codec()
        self.recorder = Recorder(
            mosquitto.broker,
            wire.topics.gateway_topic(wire.topics.Channel.RECEIPT, SITE, GATEWAY),
            client_id="test-hub",
        )

    async def send(self, b: wire.Broadcast) -> None:
        await self.recorder.link.publish(wire.topics.broadcast(SITE), self.codec.encode(b), qos=1)

    def receipts(self, broadcast_id: str) -> list[wire.Receipt]:
        decoded = (
            self.codec.decode(m.payload, wire.Receipt, utc_now(), check_time=False)
            for m in self.recorder.messages
        )
        return [r for r in decoded if r.broadcast_id == broadcast_id]


async def test_cap_broadcast_plays_on_every_speaker_and_a_cancel_stops_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    clock = ShiftedClock()
    speakers = [Speaker(s, BUILDING) for s in SPEAKERS]
    sim = SimulatedBuilding(
        mosquitto.broker,
        site=SITE,
        gateway=GATEWAY,
        building=BUILDING,
        gas_devices=[],
        speakers=speakers,
        clock=clock,
    )
    agent = agent_for(mosquitto, tmp_path / "edge")
    hub = Hub(mosquitto)
    async with running(agent.run(), sim.run(), hub.recorder.link.run()):
        for link in (agent.local, sim.link, hub.recorder.link):
            assert await link.wait_connected(10)

        # Another building's warning is not played here (checked after ours has arrived).
        elsewhere = cap.with_cap(
            broadcast(buildings=["b9"]),
            dataclasses.replace(FIELDS, area=cap.Area("9号楼", buildings=("b9",))),
        )
        await hub.send(elsewhere)

        warning = cap.with_cap(broadcast(), FIELDS)
        assert warning.cap is not None
        await hub.send(warning)
        await wait_for(
            lambda: len(hub.receipts(warning.id)) == len(SPEAKERS), what="a receipt per speaker"
        )
        expected = cap.content_hash(warning)
        receipts = hub.receipts(warning.id)
        assert {r.speaker for r in receipts} == set(SPEAKERS)
        for r in receipts:
            assert (r.outcome, r.content_hash) == ("played", expected)
            assert (r.site, r.gateway, r.building) == (SITE, GATEWAY, BUILDING)
        # The hash covers both languages of the CAP, as said (before pinyin, no chime).
        said = cap.script(warning)
        assert [a.language for a in said] == ["zh-CN", "en-US"]
        assert said[0].text == f"{warning.text} 不要使用电梯和明火。"
        for speaker in speakers:
            assert [r.number for r in speaker.renditions(warning.id)] == [1, 2, 3, 4]
            assert speaker.played == [warning]

        # The Cancel lands in the middle of the second rendition.
        first = speakers[0].renditions(warning.id)
        cancel_at = first[1].start + (first[1].end - first[1].start) / 2
        clock.set(cancel_at)
        all_clear = cap.with_cap(
            broadcast(
                msg_type="Cancel",
                severity=wire.Severity.MINOR,
                headline="警报解除",
                text="1号楼燃气泄漏警报解除。",
                repeat=1,
            ),
            dataclasses.replace(
                FIELDS,
                urgency="Past",
                instruction="",
                translations=(),
                references=(cap.Reference(SENDER, warning.id, warning.ts),),
            ),
        )
        await hub.send(all_clear)
        await wait_for(
            lambda: len(hub.receipts(all_clear.id)) == len(SPEAKERS), what="the Cancel's receipts"
        )
        for r in hub.receipts(all_clear.id):
            assert (r.outcome, r.content_hash) == ("played", cap.content_hash(all_clear))
            assert "stopped 3 rendition(s)" in r.detail
        later = cancel_at + timedelta(hours=1)
        for speaker in speakers:
            kept = speaker.renditions(warning.id)
            assert [r.number for r in kept] == [1, 2]
            assert kept[1].cut
            assert kept[1].end - cancel_at < timedelta(seconds=2)  # cut when the Cancel came
            heard = [r.broadcast_id for r in speaker.heard(later)]
            assert heard == [warning.id, warning.id, all_clear.id]

        assert hub.receipts(elsewhere.id) == []
        assert all(s.renditions(elsewhere.id) == [] for s in speakers)
        assert agent.counters["broadcasts"] == 2
        assert sim.counters["handler_errors"] == 0
    agent.close()


async def test_a_drill_says_so_and_receipts_prove_it(mosquitto: Mosquitto, tmp_path: Path) -> None:
    speakers = [Speaker(s, BUILDING) for s in SPEAKERS]
    sim = SimulatedBuilding(
        mosquitto.broker,
        site=SITE,
        gateway=GATEWAY,
        building=BUILDING,
        gas_devices=[],
        speakers=speakers,
    )
    agent = agent_for(mosquitto, tmp_path / "edge")
    hub = Hub(mosquitto)
    async with running(agent.run(), sim.run(), hub.recorder.link.run()):
        for link in (agent.local, sim.link, hub.recorder.link):
            assert await link.wait_connected(10)
        drill = cap.with_cap(
            broadcast(status="Exercise", severity=wire.Severity.MINOR, repeat=1),
            dataclasses.replace(FIELDS, note="消防演习"),
        )
        await hub.send(drill)
        await wait_for(lambda: len(hub.receipts(drill.id)) == len(SPEAKERS), what="receipts")
        said = cap.script(drill)
        assert said[0].text.startswith("演习。")
        assert said[1].text.startswith("This is a drill. ")
        assert {r.content_hash for r in hub.receipts(drill.id)} == {cap.content_hash(drill)}
        # A plain broadcast with the same words has another hash: the receipt proves the
        # speakers announced a drill.
        assert cap.content_hash(drill) != cap.content_hash(
            wire.Broadcast(
                id=drill.id,
                site=SITE,
                ts=drill.ts,
                severity=drill.severity,
                headline=drill.headline,
                text=drill.text,
                cap=drill.cap,
            )
        )
    agent.close()


async def test_a_warning_arriving_after_its_cancel_is_never_played(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    speakers = [Speaker(s, BUILDING) for s in SPEAKERS]
    sim = SimulatedBuilding(
        mosquitto.broker,
        site=SITE,
        gateway=GATEWAY,
        building=BUILDING,
        gas_devices=[],
        speakers=speakers,
    )
    agent = agent_for(mosquitto, tmp_path / "edge")
    hub = Hub(mosquitto)
    warning = cap.with_cap(broadcast(), FIELDS)
    cancel = cap.with_cap(
        broadcast(msg_type="Cancel", headline="警报解除", text="警报解除。", repeat=1),
        dataclasses.replace(
            FIELDS,
            urgency="Past",
            instruction="",
            translations=(),
            references=(cap.Reference(SENDER, warning.id, warning.ts),),
        ),
    )
    async with running(agent.run(), sim.run(), hub.recorder.link.run()):
        for link in (agent.local, sim.link, hub.recorder.link):
            assert await link.wait_connected(10)
        # Redelivered late, after its Cancel (a gateway back from an outage): skipped.
        await hub.send(cancel)
        await wait_for(lambda: len(hub.receipts(cancel.id)) == len(SPEAKERS), what="receipts")
        await hub.send(warning)
        await wait_for(
            lambda: agent.counters["broadcasts.cancelled"] == 1, what="the late warning skipped"
        )
    assert hub.receipts(warning.id) == []
    assert all(s.renditions(warning.id) == [] for s in speakers)
    agent.close()
