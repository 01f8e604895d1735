"""The rules' state across a crash: an alarm's own rule state is saved with the alarm (a few
kB, not the whole engine), and a restarted agent knows the alarm is raised."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus import Broker
from bus.mqtt import Incoming
from edge import EdgeAgent, parse
from edge.agent import DISCOVERED, ENGINE_ALERTS, ENGINE_MODELS, ENGINE_STATE
from edge.outbox import Outbox
from tests.conftest import wait_for
from tests.integration.edge_support import edge_config_yaml
from wire import DeviceStatus, Reading, topics

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
GAS = "gas-b1-101"


def agent_at(data_dir: Path) -> EdgeAgent:
    # No broker runs: commands fail (counted), the outbox and the rule state are what we test.
    return EdgeAgent(parse(edge_config_yaml(Broker("127.0.0.1", 9), data_dir)), clock=lambda: T0)


async def leak(agent: EdgeAgent, seconds: int) -> None:
    for s in range(seconds + 1):
        at = T0 + timedelta(seconds=s)
        await agent._evaluate(Reading(device=GAS, seq=s, ts=at, values={"gas_lel": 30.0}), at)
    await asyncio.gather(*agent._tasks, return_exceptions=True)  # the failed siren commands


def raised(agent: EdgeAgent) -> dict[str, str | None]:
    return {
        f"{rule}/{scope}": track.severity
        for rule, tracks in agent.engine.state.alerts.items()
        for scope, track in tracks.items()
        if track.severity is not None
    }


async def test_an_alarm_saves_its_rule_state_and_a_restart_keeps_it(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    await leak(agent, seconds=3)
    before = raised(agent)
    assert before and agent.counters["alerts.raised"] == 1
    # Only the alarm's rule was saved, and no whole state yet (the agent "crashes" now).
    parts = agent.outbox.load_states(ENGINE_ALERTS)
    assert agent.snapshots.load(ENGINE_STATE) is None
    assert len(parts) == 1 and max(len(b) for _, b in parts.values()) < 4096
    agent.outbox.close()
    agent.snapshots.close()

    again = agent_at(tmp_path)
    assert raised(again) == before
    await leak(again, seconds=3)
    assert again.counters["alerts.raised"] == 0, "the restarted agent raised it again"
    # A whole save holds the parts stamped so far: they are not applied over it again.
    again._state_dirty = True
    again._save_state()
    saved = again.snapshots.load(ENGINE_STATE)
    assert saved is not None
    assert saved[0] >= max(stamp for stamp, _ in again.outbox.load_states(ENGINE_ALERTS).values())
    again.close()
    assert raised(agent_at(tmp_path)) == before


async def test_a_part_older_than_the_saved_state_is_not_applied(tmp_path: Path) -> None:
    agent = agent_at(tmp_path)
    await leak(agent, seconds=3)
    (name, (stamp, raised_part)), *_ = agent.outbox.load_states(ENGINE_ALERTS).items()
    # The leak ends and the alarm clears; its part (the cleared tracks) lands in the whole
    # state, and then, as a slow outbox thread may have it, the raised part lands after it.
    for s in range(4, 400):
        at = T0 + timedelta(seconds=s)
        await agent._evaluate(Reading(device=GAS, seq=s, ts=at, values={"gas_lel": 0.0}), at)
    assert agent.counters["alerts.cleared"] == 1 and not raised(agent)
    agent._state_dirty = True
    agent._save_state()
    agent.outbox.add(
        "late", "t", b"x", life_safety=True, now_ms=0, state=(name, stamp, raised_part)
    )
    agent.close()
    assert not raised(agent_at(tmp_path)), "an older part was applied over a newer state"


async def test_a_state_saved_in_the_outbox_by_an_older_version_is_restored(
    tmp_path: Path,
) -> None:
    agent = agent_at(tmp_path)
    await leak(agent, seconds=3)
    before = raised(agent)
    # As an older version kept it: the whole state in the outbox, parts without stamps.
    agent.outbox._db.execute(
        "INSERT INTO rule_state (name, blob) VALUES (?, ?)", (ENGINE_STATE, agent.engine.snapshot())
    )
    agent.outbox._db.execute("UPDATE rule_state SET stamp = 0")
    agent.outbox.close()
    agent.snapshots.close()
    again = agent_at(tmp_path)
    assert raised(again) == before
    assert again._stamp == 0
    # Moved to rules.sqlite3 (stamped before every part) and gone from the outbox.
    assert again.outbox.load_state(ENGINE_STATE) is None
    moved = again.snapshots.load(ENGINE_STATE)
    assert moved is not None and moved[0] == -1
    again.close()
    assert raised(agent_at(tmp_path)) == before


async def test_a_state_save_commits_after_the_alerts_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole state goes to its own file from its own thread; an alarm's event goes to the
    outbox from the outbox's thread. A state holding a raised alarm must not reach the disk
    before that alarm's event: after a crash between the two, the alarm would be restored as
    raised, never raised again, and never stored for the hub."""
    agent = agent_at(tmp_path)
    order: list[str] = []
    add, save = agent.outbox.add, agent.snapshots.save

    def add_alert(*args: Any, **kwargs: Any) -> bool:
        stored = add(*args, **kwargs)
        order.append("alert")
        return stored

    def save_state(*args: Any, **kwargs: Any) -> None:
        save(*args, **kwargs)
        order.append("state")

    monkeypatch.setattr(agent.outbox, "add", add_alert)
    monkeypatch.setattr(agent.snapshots, "save", save_state)
    # The outbox's thread is busy (a slow disk, a checkpoint): the alarm's commit waits.
    busy = threading.Event()
    agent._disk.submit(busy.wait)
    raising = None
    for s in range(10):
        at = T0 + timedelta(seconds=s)
        reading = Reading(device=GAS, seq=s, ts=at, values={"gas_lel": 30.0})
        task = asyncio.create_task(agent._evaluate(reading, at))
        await asyncio.sleep(0)  # the task runs up to its first wait
        if agent.counters["alerts.raised"]:
            raising = task
            break
        await task
    assert raising is not None and not raising.done()
    agent._state_dirty = True
    saving = asyncio.create_task(agent._save_state_soon())
    # The save either finished (wrongly, before the alert) or waits behind the alert's commit.
    deadline = time.monotonic() + 10
    while not saving.done() and agent._disk._work_queue.qsize() < 2:  # the alert, a barrier
        assert time.monotonic() < deadline, "the save neither finished nor queued its barrier"
        await asyncio.sleep(0.01)
    busy.set()
    await saving
    await raising
    await asyncio.gather(*agent._tasks, return_exceptions=True)
    assert order == ["alert", "state"]
    agent.close()


def test_the_uplink_reads_past_a_full_batch_of_held_alarms(tmp_path: Path) -> None:
    """An alarm flapping while the hub is away: its events wait behind its first one (sent,
    not acked), more of them than a batch. A new alarm behind them must still be read."""
    from edge.agent import UPLINK_BATCH

    agent = agent_at(tmp_path)
    outbox = agent.outbox
    outbox.add("first", "t", b"x", life_safety=False, now_ms=0, key="flap:1")
    outbox.mark_sent(["first"], 1)
    for n in range(UPLINK_BATCH + 20):
        outbox.add(f"flap{n}", "t", b"x", life_safety=False, now_ms=2 + n, key="flap:1")
    outbox.add("gas", "t", b"x", life_safety=True, now_ms=500, key="gas:1")
    fresh, replaying = agent._fresh_and_replaying(1_000, set())
    assert replaying == {"flap:1"}
    assert "gas" in {e.id for e in fresh}
    assert [e.seq for e in fresh] == sorted(e.seq for e in fresh)
    # Held by one published and not yet marked (its key given as unmarked) the same way.
    outbox.add("fire", "t", b"x", life_safety=True, now_ms=600, key="fire:1")
    for n in range(UPLINK_BATCH + 5):
        outbox.add(f"fire{n}", "t", b"x", life_safety=True, now_ms=601 + n, key="fire:1")
    outbox.add("co", "t", b"x", life_safety=True, now_ms=900, key="co:1")
    outbox.remove([f"flap{n}" for n in range(UPLINK_BATCH + 20)] + ["gas"])
    fresh, _ = agent._fresh_and_replaying(1_000, {"fire:1"})
    assert "co" in {e.id for e in fresh}
    agent.close()


def pump_agent(data_dir: Path) -> EdgeAgent:
    config = parse(
        f"site: s1\ngateway: gw-1\nbuilding: b1\ndata_dir: {data_dir}\n"
        "broker: {host: 127.0.0.1, port: 9}\nrules: {include: [pump]}\n"
        "devices:\n  - {id: pump-1, kind: pump, interval_s: 10}\n"
    )
    return EdgeAgent(config, clock=lambda: T0)


async def train_pump(agent: EdgeAgent) -> None:
    """Enough readings for the pump's detectors to learn a model."""
    for i in range(80):
        at = T0 + timedelta(seconds=10 * i)
        values = {"vibration_mm_s": 2.0 + (i % 7) / 10, "motor_current_a": 12.0 + (i % 5) / 10}
        await agent._evaluate(Reading(device="pump-1", seq=i, ts=at, values=values), at)


async def test_detector_models_are_saved_apart_and_only_when_a_round_is_new(
    tmp_path: Path,
) -> None:
    """The models are most of a state's bytes and change once a round (MODELS_EVERY_S): a
    gateway saving its state every few seconds must not write them each time (SD card)."""
    agent = pump_agent(tmp_path)
    saved: list[str] = []
    save = agent.snapshots.save

    def spy(name: str, blob: bytes, stamp: int) -> None:
        saved.append(name)
        save(name, blob, stamp)

    agent.snapshots.save = spy  # type: ignore[method-assign]
    await train_pump(agent)
    agent._state_dirty = True
    agent._save_state()
    assert saved == [ENGINE_MODELS, ENGINE_STATE]
    state = msgspec.msgpack.decode(agent.snapshots.load(ENGINE_STATE)[1])  # type: ignore[index]
    assert state["detectors"] == {}, "the state itself carries no models"
    agent._state_dirty = True
    agent._save_state()  # no new round
    assert saved == [ENGINE_MODELS, ENGINE_STATE, ENGINE_STATE]
    [(key, learned)] = agent.engine._detectors.items()
    agent.close()

    again = pump_agent(tmp_path)
    restored = again.engine._detectors.get(key)
    assert restored is not None and pickle.dumps(restored) == pickle.dumps(learned)
    again.close()


async def test_models_carried_by_a_state_from_before_are_saved_apart_at_the_first_save(
    tmp_path: Path,
) -> None:
    """A gateway upgraded from states that carried the models: its first save (without them)
    must not leave the learned models in memory only."""
    agent = pump_agent(tmp_path)
    await train_pump(agent)
    agent.snapshots.save(ENGINE_STATE, agent.engine.snapshot(models=True), 0)  # the old way
    [(key, learned)] = agent.engine._detectors.items()
    agent.outbox.close()
    agent.snapshots.close()

    upgraded = pump_agent(tmp_path)
    assert upgraded.snapshots.load(ENGINE_MODELS) is None
    upgraded._state_dirty = True
    upgraded._save_state()  # no reading since: no new round, the carried models all the same
    assert upgraded.snapshots.load(ENGINE_MODELS) is not None
    upgraded.close()
    again = pump_agent(tmp_path)
    restored = again.engine._detectors.get(key)
    assert restored is not None and pickle.dumps(restored) == pickle.dumps(learned)
    again.close()


def without_gas(data_dir: Path) -> str:
    """agent_at's config with its gas sensor taken out."""
    text = edge_config_yaml(Broker("127.0.0.1", 9), data_dir)
    without = text.replace('  - {id: gas-b1-101, kind: gas, unit: "101"}\n', "")
    assert GAS not in without
    return without


NEW = "gas-b1-301"  # a gas sensor discovery takes in


async def announce_and_leak(agent: EdgeAgent) -> None:
    """NEW announces itself in flat 301, then leaks past the gas rule's hold."""
    status = DeviceStatus(device=NEW, state="online", ts=T0, kind="gas", unit="301")
    topic = topics.status("s1", "gw-1", NEW)
    await agent._on_message(Incoming(topic, msgspec.json.encode(status), 1, True))
    for s in range(4):
        at = T0 + timedelta(seconds=s)
        await agent._evaluate(Reading(device=NEW, seq=s, ts=at, values={"gas_lel": 30.0}), at)
    await asyncio.gather(*agent._tasks, return_exceptions=True)


async def test_a_device_taken_out_of_the_config_has_its_alarm_cleared_at_the_hub(
    tmp_path: Path,
) -> None:
    """Its alarm would otherwise stand for ever (the device never reports again): the next
    run forgets it, and the clear goes to the hub before anything else."""
    agent = agent_at(tmp_path)
    await leak(agent, seconds=3)
    assert raised(agent)
    agent.close()
    again = EdgeAgent(parse(without_gas(tmp_path)), clock=lambda: T0 + timedelta(seconds=10))
    task = asyncio.create_task(again.run())  # no broker: the clear waits in the outbox
    try:

        def cleared() -> list[dict[str, Any]]:
            events = [msgspec.json.decode(e.payload) for e in again.outbox.due(0, 0, sent=None)]
            return [e for e in events if e["phase"] == "cleared"]

        await wait_for(lambda: bool(cleared()), what="the removed device's clear")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [clear] = cleared()
    assert clear["device"] == GAS and clear["message"].endswith("device removed or moved")
    assert raised(again) == {} and GAS not in again.engine.state.devices
    assert again.counters["devices_removed"] == 1
    again.close()
    assert raised(agent_at(tmp_path)) == {}  # and it stays forgotten


async def test_a_start_that_never_runs_forgets_no_device(tmp_path: Path) -> None:
    """Stopped before run() (a SIGTERM at once, a port taken): the saved state must keep the
    alarm, or its clear would never be sent and the hub would hold it open for ever."""
    agent = agent_at(tmp_path)
    await leak(agent, seconds=3)
    before = raised(agent)
    agent.close()
    EdgeAgent(parse(without_gas(tmp_path))).close()
    assert raised(agent_at(tmp_path)) == before


async def test_a_discovered_device_and_its_alarm_survive_a_crash_before_any_state_save(
    tmp_path: Path,
) -> None:
    """The whole rule state is saved only every few seconds; the device is committed before
    its alarm is, so a restart that finds the alarm finds the device (and does not clear the
    alarm as a device taken out)."""
    text = edge_config_yaml(Broker("127.0.0.1", 9), tmp_path, extra="discovery: {}\n")
    agent = EdgeAgent(parse(text), clock=lambda: T0)
    await announce_and_leak(agent)
    before = raised(agent)
    assert f"gas-lel/{NEW}" in before and agent.snapshots.load(ENGINE_STATE) is None
    agent._disk.shutdown(wait=True)  # the gateway dies: no state was saved
    agent.outbox.close()
    agent.snapshots.close()

    again = EdgeAgent(parse(text), clock=lambda: T0 + timedelta(seconds=10))
    assert again.devices[NEW].unit == "301"
    await again._settle_devices()
    assert raised(again) == before and again.counters["alerts.cleared"] == 0
    again.close()


async def test_a_damaged_discovered_entry_keeps_its_device_until_told_otherwise(
    tmp_path: Path,
) -> None:
    """An entry that cannot be read (a damaged card) must not clear a standing alarm as a
    device taken out; clearing its announcement, or discovery turned off, forgets it."""
    on = edge_config_yaml(Broker("127.0.0.1", 9), tmp_path, extra="discovery: {}\n")

    async def raise_alarm() -> None:
        agent = EdgeAgent(parse(on), clock=lambda: T0)
        await announce_and_leak(agent)
        agent._state_dirty = True
        agent.close()
        damaged = Outbox(tmp_path / "outbox.sqlite3")
        damaged.save_state(DISCOVERED + NEW, b"\xc1 damaged")
        damaged.close()

    await raise_alarm()
    again = EdgeAgent(parse(on), clock=lambda: T0 + timedelta(seconds=10))
    await again._settle_devices()
    assert f"gas-lel/{NEW}" in raised(again) and again.counters["alerts.cleared"] == 0
    topic = topics.status("s1", "gw-1", NEW)
    await again._on_message(Incoming(topic, b"", 1, True))  # its announcement cleared
    assert raised(again) == {} and again.counters["alerts.cleared"] == 1
    again.close()

    await raise_alarm()
    off = EdgeAgent(parse(on.replace("discovery: {}\n", "")), clock=lambda: T0)
    await off._settle_devices()
    assert raised(off) == {} and off.counters["alerts.cleared"] == 1
    assert off.outbox.load_states(DISCOVERED) == {}
    off.close()


async def test_a_new_event_held_for_an_older_one_since_acked_is_not_left_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An uplink pass takes the alerts published and not yet marked as it starts, and holds a
    newer event of theirs. If the older one is acknowledged and its send finishes while the
    pass reads the outbox, nothing kicks the uplink for the held one: it waited the uplink's
    1 s round (seen with alarms a few ms apart). The pass must pass again at once."""
    agent = agent_at(tmp_path)
    published: list[str] = []

    async def publish(topic: str, payload: bytes, **_: Any) -> None:
        published.append(payload.decode())

    monkeypatch.setattr(agent.upstream, "publish", publish)
    agent.upstream.connected.set()
    outbox = agent.outbox
    outbox.add("old", "t", b"old", life_safety=True, now_ms=0, key="gas:1")
    outbox.add("new", "t", b"new", life_safety=True, now_ms=1, key="gas:1")
    agent._unmarked["old"] = "gas:1"  # published by its alarm, its mark not yet made
    busy = threading.Event()
    agent._disk.submit(busy.wait)  # the pass's read waits behind a slow disk
    passing = asyncio.create_task(agent._send_new())
    await asyncio.sleep(0)  # the pass has taken the unmarked alerts and queued its read
    # Meanwhile the hub acknowledges "old" and its send finishes (_after_ack, _sent_at_once):
    agent._after_ack(["old"], outbox.remove(["old"]))
    agent._unmarked.pop("old")
    busy.set()
    await passing
    assert not published and agent._held == {"gas:1"}  # held on what the pass took
    assert agent._kick.is_set(), "the held event must not wait for the uplink's next round"
    agent._kick.clear()
    await agent._send_new()
    assert published == ["new"]
    agent.close()
