"""The agent in parts (edge/parts.py): which part runs a device, what a config with parts
may not hold, the board the parts leave their figures on, and ingest's view of the devices
of other parts."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from bus import Incoming
from edge import EdgeAgent, EdgeConfig, Outbox
from edge.agent import (
    _DISCOVERED_ENCODER,
    DISCOVERED,
    Retired,
    discovered_on_disk,
)
from edge.config import DeviceConfig, DiscoveryConfig, load, parse, part_of, parts_problems
from edge.ingest import Accepted, Ingest, Rejection
from edge.latency import Latency
from edge.metrics import AgentCollector
from edge.parts import SLOT_BYTES, Board, Part, PartFigures, part_dir, retiring_parts
from rules import ConfigError
from wire import Codec, DeviceStatus, topics

SITE, GATEWAY = "s1", "gw-1"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _device(id: str, unit: str | None = None, resident: str | None = None) -> DeviceConfig:
    return DeviceConfig(id=id, kind="gas", unit=unit, resident=resident)


def test_a_flat_is_never_split_and_flats_spread_over_the_parts() -> None:
    flats = {
        str(unit): [_device(f"d{unit}-{i}", str(unit)) for i in range(5)] for unit in range(50)
    }
    for devices in flats.values():
        assert len({part_of(d, 2) for d in devices}) == 1
    spread = Counter(part_of(devices[0], 2) for devices in flats.values())
    assert set(spread) == {0, 1} and min(spread.values()) >= 15, spread
    assert {part_of(d, 1) for ds in flats.values() for d in ds} == {0}


def test_a_device_without_a_flat_goes_with_its_resident_else_alone() -> None:
    wearable = _device("wear-1", resident="grandma-li")
    assert part_of(wearable, 3) == part_of(_device("bed-1", resident="grandma-li"), 3)
    # The same on every start: crc32, not Python's salted hash.
    assert part_of(_device("pump-1"), 7) == part_of(_device("pump-1"), 7)


def _config(extra: str, devices: str = "") -> str:
    return (
        f"site: {SITE}\ngateway: {GATEWAY}\nbuilding: b1\n{extra}\ndevices:\n{devices or '  []'}\n"
    )


BUILDING_GAS = """\
  rules:
    - id: building-gas
      kind: gas
      scope: building
      devices: {kinds: [gas]}
      create:
        Severe: {all: [{metric: gas_lel, op: ">=", value: 10, unit: "%LEL"}]}
      clear: {all: [{metric: gas_lel, op: "<", value: 1, unit: "%LEL"}]}
"""


def test_parts_refuse_a_building_rule_and_say_how_to_fix_it() -> None:
    config = parse(_config("parts: 2\nrules:\n" + BUILDING_GAS))
    ((where, problem),) = parts_problems(config)
    assert where == "parts"
    assert "building-gas" in problem and "scope building" in problem and "parts: 1" in problem
    assert parts_problems(parse(_config("parts: 1\nrules:\n" + BUILDING_GAS))) == []


def test_parts_refuse_a_resident_split_across_parts(tmp_path: Path) -> None:
    units = [str(u) for u in range(20)]
    # Two flats in different parts, one resident's devices in both.
    a = next(u for u in units if part_of(_device("x", u), 2) == 0)
    b = next(u for u in units if part_of(_device("x", u), 2) == 1)
    devices = (
        f'  - {{id: bed-1, kind: bed, unit: "{a}", resident: li}}\n'
        f'  - {{id: pir-1, kind: pir, unit: "{b}", resident: li}}\n'
    )
    path = tmp_path / "edge.yaml"
    # Without a rule over a resident's devices together, the split harms nothing.
    path.write_text(_config("parts: 2", devices))
    assert load(path, env={}).parts == 2
    path.write_text(_config("parts: 2\nrules: {include: [elder-care]}", devices))
    with pytest.raises(ConfigError) as refused:
        load(path, env={})
    message = str(refused.value)
    assert str(path) in message and "resident 'li'" in message and "bed-1" in message
    assert "pir-1" in message and "unit" in message
    path.write_text(_config("parts: 1\nrules: {include: [elder-care]}", devices))
    assert load(path, env={}).parts == 1


def test_the_board_carries_each_parts_figures_across_a_fork() -> None:
    board = Board(3)
    assert board.read(1) is None
    assert board.write(2, b"x" * 10)
    assert not board.write(1, b"x" * SLOT_BYTES), "too big for a slot"
    pid = os.fork()
    if pid == 0:  # a part: writes its figures, then again, and ends
        board.write(1, b"first")
        board.write(1, b"second figures")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert board.read(1) == b"second figures"
    assert board.read(2) == b"x" * 10
    assert board.read(0) is None


def test_parts_left_on_disk_by_more_parts_are_found(tmp_path: Path) -> None:
    for index in (1, 2, 3):
        part_dir(tmp_path, index).mkdir()
    (tmp_path / "part-x").mkdir()
    (tmp_path / "part-4").write_text("not a directory")
    assert retiring_parts(tmp_path, 2) == [2, 3]
    assert retiring_parts(tmp_path, 4) == []
    assert part_dir(tmp_path, 0) == tmp_path
    assert Part(2, 2).retiring and not Part(1, 2).retiring and Part(0, 2).speaks


def _units(index: int, count: int = 2) -> list[str]:
    return [str(u) for u in range(40) if part_of(_device("x", str(u)), count) == index]


def _ingest(index: int, devices: list[DeviceConfig], discovery: bool = True) -> Ingest:
    part = Part(index, 2)
    ingest = Ingest(
        SITE,
        GATEWAY,
        [d for d in devices if part.owns(d)],
        Codec(),
        DiscoveryConfig() if discovery else None,
        owns=part.owns,
        elsewhere=[d for d in devices if not part.owns(d)],
    )
    ingest.reports_unknown = part.speaks
    return ingest


def _status(
    device: str,
    state: Literal["online", "offline"] = "online",
    kind: str | None = None,
    unit: str | None = None,
) -> bytes:
    return msgspec.json.encode(
        DeviceStatus(device=device, state=state, ts=NOW, kind=kind, unit=unit)
    )


def test_a_part_passes_over_the_statuses_of_the_other_parts_devices() -> None:
    mine, theirs = _units(0)[0], _units(1)[0]
    devices = [_device("gas-a", mine), _device("gas-b", theirs)]
    ingest = _ingest(0, devices)
    seen = ingest.accept(topics.status(SITE, GATEWAY, "gas-b"), _status("gas-b"), NOW)
    assert seen == Accepted() and not ingest.counters
    own = ingest.accept(topics.status(SITE, GATEWAY, "gas-a"), _status("gas-a"), NOW)
    assert isinstance(own, Accepted) and own.status is not None
    assert ingest.counters["status.online"] == 1


def test_only_the_part_that_speaks_reports_an_unknown_device() -> None:
    topic = topics.status(SITE, GATEWAY, "stray")
    payload = _status("stray", state="offline")
    speaking, other = _ingest(0, [], discovery=False), _ingest(1, [], discovery=False)
    reported = speaking.accept(topic, payload, NOW)
    assert isinstance(reported, Rejection) and reported.report
    assert speaking.counters["rejected.unknown_device"] == 1
    quiet = other.accept(topic, payload, NOW)
    assert isinstance(quiet, Rejection) and not quiet.report and not other.counters


def test_an_announcement_is_taken_in_by_the_part_of_its_flat_alone() -> None:
    mine, theirs = _units(0)[0], _units(1)[0]
    here, there = _ingest(0, []), _ingest(1, [])
    topic = topics.status(SITE, GATEWAY, "pir-9")
    announce = _status("pir-9", kind="pir", unit=theirs)
    assert here.accept(topic, announce, NOW) == Accepted()
    taken = there.accept(topic, announce, NOW)
    assert isinstance(taken, Accepted) and taken.discovered is not None
    # Its last will passes unremarked in the other part, as its flat's part takes it.
    offline = _status("pir-9", state="offline")
    assert here.accept(topic, offline, NOW) == Accepted() and not here.counters
    # It moves flats, into this part: taken in here, forgotten there.
    moved = _status("pir-9", kind="pir", unit=mine)
    into = here.accept(topic, moved, NOW)
    assert isinstance(into, Accepted) and into.discovered is not None
    out = there.accept(topic, moved, NOW)
    assert isinstance(out, Accepted) and out.forgotten == "pir-9"
    assert "pir-9" not in there.devices and "pir-9" in here.devices


def test_a_local_warning_knows_the_speakers_of_every_part() -> None:
    mine, theirs = _units(0)[0], _units(1)[0]
    devices = [
        DeviceConfig(id="spk-a", kind="speaker", unit=mine),
        DeviceConfig(id="spk-b", kind="speaker", unit=theirs),
        _device("gas-b", theirs),
    ]
    ingest = _ingest(0, devices)
    other = _units(1)[1]
    announce = _status("spk-c", kind="speaker", unit=other)
    ingest.accept(topics.status(SITE, GATEWAY, "spk-c"), announce, NOW)
    assert sorted(ingest.speakers_elsewhere()) == ["spk-b", "spk-c"]
    assert list(ingest.devices) == ["spk-a"]


def test_a_bad_status_of_a_device_no_part_has_is_reported_once() -> None:
    topic = topics.status(SITE, GATEWAY, "x-1")
    toaster = msgspec.json.encode(
        {
            **msgspec.to_builtins(DeviceStatus(device="x-1", state="online", ts=NOW)),
            "kind": "toaster",
        }
    )
    for payload in (toaster, b"{"):
        parts = [_ingest(0, []), _ingest(1, [])]
        results = [part.accept(topic, payload, NOW) for part in parts]
        reported = [isinstance(r, Rejection) and r.report for r in results]
        assert reported == [True, False], payload
        assert sum(sum(part.counters.values()) for part in parts) == 1


def test_a_full_part_does_not_refuse_a_device_of_another_part() -> None:
    here = _ingest(0, [])
    assert here.discovery is not None
    here.discovery = DiscoveryConfig(max_devices=1)
    first = here.accept(
        topics.status(SITE, GATEWAY, "pir-0"), _status("pir-0", kind="pir", unit=_units(0)[0]), NOW
    )
    assert isinstance(first, Accepted) and first.discovered is not None
    topic = topics.status(SITE, GATEWAY, "pir-1")
    theirs = _status("pir-1", kind="pir", unit=_units(1)[0])
    assert here.accept(topic, theirs, NOW) == Accepted() and not here.counters.get(
        "rejected.unknown_device"
    )
    # Its own limit still holds for a device of its own.
    full = here.accept(
        topics.status(SITE, GATEWAY, "pir-2"), _status("pir-2", kind="pir", unit=_units(0)[1]), NOW
    )
    assert isinstance(full, Rejection) and "max_devices" in full.detail


def test_a_part_hands_on_another_parts_reading_its_session_held() -> None:
    mine, theirs = _units(0)[0], _units(1)[0]
    ingest = _ingest(0, [_device("gas-a", mine), _device("gas-b", theirs)])
    reading = b'{"device":"gas-b","seq":1,"ts":"2026-11-29T12:00:00Z","values":{"gas_lel":1}}'
    handed = ingest.accept(topics.reading(SITE, GATEWAY, "gas-b"), reading, NOW)
    assert isinstance(handed, Accepted) and handed.hand_on and not handed.readings
    owner = ingest.owner("gas-b")
    assert owner is not None and part_of(owner, 2) == 1


GAS_RULES = "rules:\n  gas: {low: 10, high: 25, hold_low_s: 1, hold_high_s: 1, clear_below: 5}\n"


def _agent_config(tmp_path: Path, extra: str = "") -> EdgeConfig:
    a, b = _units(0)[0], _units(1)[0]
    return parse(
        f"site: {SITE}\ngateway: {GATEWAY}\nbuilding: b1\ndata_dir: {tmp_path / 'data'}\n"
        f"broker: {{host: 127.0.0.1, port: 9}}\nparts: 2\ndevices:\n"
        f'  - {{id: gas-a, kind: gas, unit: "{a}"}}\n  - {{id: gas-b, kind: gas, unit: "{b}"}}\n'
        f"{GAS_RULES}{extra}"
    )


def _save_discovered(directory: Path, device: DeviceConfig) -> None:
    box = Outbox(directory / "outbox.sqlite3")
    box.save_state(DISCOVERED + device.id, _DISCOVERED_ENCODER.encode(device))
    box.close()


def test_each_part_takes_in_the_discovered_devices_of_its_flats_from_any_part(
    tmp_path: Path,
) -> None:
    config = _agent_config(tmp_path, "discovery: {}\n")
    data = Path(config.data_dir)
    # Saved by part 1 in a run where its flat was part 1's; part 0's now (say, parts moved).
    ours = DeviceConfig(id="pir-0", kind="pir", unit=_units(0)[2])
    theirs = DeviceConfig(id="pir-1", kind="pir", unit=_units(1)[2])
    part_dir(data, 1).mkdir(parents=True)
    _save_discovered(part_dir(data, 1), ours)
    _save_discovered(part_dir(data, 1), theirs)
    found = tuple(discovered_on_disk(data))
    assert {d.id for d in found} == {"pir-0", "pir-1"}
    zero = EdgeAgent(config, part=Part(0, 2, discovered=found))
    retiring = EdgeAgent(config, part=Part(2, 2, discovered=found))
    try:
        assert "pir-0" in zero.devices and "pir-1" not in zero.devices
        assert not set(retiring.devices), "a retiring part runs no device"
        # Kept in part 0's own directory from now on; part 1's other device known to it.
        assert [d.id for d in discovered_on_disk(data) if d.id == "pir-0"] == ["pir-0"]
        offline = zero.ingest.accept(
            topics.status(SITE, GATEWAY, "pir-1"), _status("pir-1", state="offline"), NOW
        )
        assert offline == Accepted(), "another part's device is not reported unknown"
    finally:
        zero.close()
        retiring.close()
    box = Outbox(data / "outbox.sqlite3")
    try:
        assert box.load_state(DISCOVERED + "pir-0") is not None
    finally:
        box.close()


def test_a_part_refuses_reloaded_rules_it_cannot_run_whole(tmp_path: Path) -> None:
    config = _agent_config(tmp_path)
    fresh = parse(
        f"site: {SITE}\ngateway: {GATEWAY}\nbuilding: b1\nparts: 1\nrules:\n{BUILDING_GAS}"
    )
    agent = EdgeAgent(config, part=Part(0, 2))
    try:
        before = [rule.id for rule in agent.engine.rules]
        with pytest.raises(ConfigError, match="scope building"):
            asyncio.run(agent.reload_rules(fresh.rules))
        assert [rule.id for rule in agent.engine.rules] == before
    finally:
        agent.close()


def test_a_retiring_part_waits_for_an_alert_still_being_stored(tmp_path: Path) -> None:
    agent = EdgeAgent(_agent_config(tmp_path), part=Part(2, 2))
    stored = threading.Event()
    real_add = agent.outbox.add

    def slow_add(*args: Any, **kwargs: Any) -> bool:
        time.sleep(1.2)  # a slow card: the alert is queued, not yet in the outbox
        done = real_add(*args, **kwargs)
        stored.set()
        return done

    agent.outbox.add = slow_add  # type: ignore[method-assign]

    async def main() -> bool:
        queued = agent._queue_io(
            agent._store_alert, "a1", "t", b"p", key="k", unmarked={}, life_safety=True, now_ms=0
        )
        try:
            async with asyncio.timeout(3):
                await agent._retire_when_drained()
        except TimeoutError:
            retired = False
        except Retired:
            retired = True
        await queued
        return retired

    try:
        assert not asyncio.run(main()), "retired with an alert on its way to the outbox"
        assert stored.is_set() and agent.outbox.depth() == 1
        agent.outbox.remove(["a1"])  # the hub's ack

        async def drained() -> bool:
            try:
                async with asyncio.timeout(5):
                    await agent._retire_when_drained()
            except Retired:
                return True
            return False

        assert asyncio.run(drained())
    finally:
        agent.close()


def test_counters_from_the_board_never_go_down_and_staleness_shows(tmp_path: Path) -> None:
    board = Board(3)
    agent = EdgeAgent(_agent_config(tmp_path), part=Part(0, 2, board))
    counts = [0] * len(agent.rule_latency.counts)

    def leave(index: int, at: float, readings: float) -> None:
        figures = PartFigures(
            at=at, connections=1, stats={"readings": readings}, latency=counts, latency_sum=0.0
        )
        board.leave(index, figures)

    try:
        leave(1, time.monotonic(), 100.0)
        leave(2, time.monotonic(), 7.0)  # a retiring part's: counted, not a part reporting
        fresh = agent.stats()
        assert fresh["readings"] == 107 and fresh["parts_reporting"] == 2
        leave(1, time.monotonic() - 60, 100.0)  # part 1 stuck for a minute
        stale = agent.stats()
        assert stale["readings"] == 107 and stale["parts_reporting"] == 1
        kinds = {family.name: family.type for family in AgentCollector(agent).collect()}
        assert kinds["anmin_edge_parts_reporting"] == "gauge"
        assert kinds["anmin_edge_readings"] == "counter"
    finally:
        agent.close()


def test_a_full_part_reports_its_own_refusal() -> None:
    there = _ingest(1, [])
    there.discovery = DiscoveryConfig(max_devices=1)
    units = _units(1)
    there.accept(
        topics.status(SITE, GATEWAY, "pir-0"), _status("pir-0", kind="pir", unit=units[0]), NOW
    )
    refused = there.accept(
        topics.status(SITE, GATEWAY, "pir-1"), _status("pir-1", kind="pir", unit=units[1]), NOW
    )
    assert isinstance(refused, Rejection) and refused.report and "max_devices" in refused.detail
    assert there.counters["rejected.unknown_device"] == 1


def test_a_part_never_hands_on_a_topic_it_still_subscribes_to(tmp_path: Path) -> None:
    moved = DeviceConfig(id="pir-1", kind="pir", unit=_units(1)[2])
    agent = EdgeAgent(
        _agent_config(tmp_path, "discovery: {}\n"), part=Part(0, 2, discovered=(moved,))
    )
    try:
        reading = topics.reading(SITE, GATEWAY, "pir-1")
        # What a persistent session may hold from when the device was this part's.
        assert reading in agent.local.stale
        assert topics.reading(SITE, GATEWAY, "gas-b") in agent.local.stale
        assert topics.reading(SITE, GATEWAY, "gas-a") not in agent.local.stale
        agent.local.subscriptions.append((reading, 1))  # it moved away as this part heard it

        async def hand_on() -> None:
            agent._hand_on(Incoming(reading, b"{}", 1, False))
            await asyncio.sleep(0)

        asyncio.run(hand_on())
        # Published again it would come straight back here: refused, and unsubscribed.
        assert agent.counters["handed_on_refused"] == 1 and agent._handing_left == 0
        assert not agent.local.subscribed(reading)
    finally:
        agent.close()


def test_one_part_beside_a_retiring_one_is_the_whole_agent(tmp_path: Path) -> None:
    config = msgspec.structs.replace(_agent_config(tmp_path, "discovery: {}\n"), parts=1)
    data = Path(config.data_dir)
    part_dir(data, 1).mkdir(parents=True)
    _save_discovered(part_dir(data, 1), DeviceConfig(id="pir-1", kind="pir", unit=_units(1)[2]))
    found = tuple(discovered_on_disk(data))
    board = Board(2)
    zero = EdgeAgent(config, part=Part(0, 1, board, found))
    retiring = EdgeAgent(config, part=Part(1, 1, board, found))
    try:
        assert set(zero.devices) == {"gas-a", "gas-b", "pir-1"} and not retiring.devices
        assert zero.local.subscriptions[0] == (topics.gateway_devices_filter(SITE, GATEWAY), 1)
        assert zero.local.stale == []
    finally:
        zero.close()
        retiring.close()
    assert [d.id for d in discovered_on_disk(data)] == ["pir-1"]


def test_a_retiring_part_ends_only_once_what_it_hands_on_is_out(tmp_path: Path) -> None:
    config = msgspec.structs.replace(_agent_config(tmp_path), parts=1)
    board = Board(2)
    retiring = EdgeAgent(config, part=Part(1, 1, board))
    sent: list[str] = []

    def publish_soon(topic: str, payload: bytes, **_: Any) -> Awaitable[None]:
        sent.append(topic)
        return asyncio.sleep(0)

    retiring.local.publish_soon = publish_soon  # type: ignore[method-assign]
    held = topics.reading(SITE, GATEWAY, "gas-a")

    async def main() -> tuple[bool, list[str]]:
        retiring._hand_on(Incoming(held, b"{}", 1, False))
        # Part 0 has not subscribed yet (its board slot is empty): the reading waits.
        try:
            async with asyncio.timeout(2.5):
                await retiring._retire_when_drained()
        except TimeoutError:
            waited = list(sent)
        figures = PartFigures(
            at=time.monotonic(), connections=1, stats={}, latency=[], latency_sum=0
        )
        board.leave(0, figures)
        try:
            async with asyncio.timeout(5):
                await retiring._retire_when_drained()
        except Retired:
            return True, waited
        return False, waited

    try:
        retired, waited = asyncio.run(main())
        assert waited == [] and sent == [held] and retired
        assert retiring.counters["handed_on"] == 1
    finally:
        retiring.close()


def test_the_alarm_histograms_are_every_parts(tmp_path: Path) -> None:
    board = Board(2)
    agent = EdgeAgent(_agent_config(tmp_path), part=Part(0, 2, board))
    try:
        agent.alarm_latency.observe(0.002)
        agent.alarm_disk.observe(0.0005)
        other = Latency(agent.alarm_latency.buckets)
        other.observe(0.004)
        board.leave(
            1,
            PartFigures(
                at=time.monotonic(),
                connections=1,
                stats={},
                latency=[0] * len(agent.rule_latency.counts),
                latency_sum=0.0,
                alarm=other.counts,
                alarm_sum=other.sum,
                alarm_disk=other.counts,
                alarm_disk_sum=other.sum,
            ),
        )
        alarm, disk = agent.alarm_latencies()
        assert alarm.count == 2 and alarm.sum == pytest.approx(0.006)
        assert disk.count == 2 and disk.sum == pytest.approx(0.0045)
        assert alarm.quantile(0.99) == 0.005  # part 1's alarm, in its bucket
    finally:
        agent.close()
