"""Line protocol is made on the agent's loop a slice at a time (Telemetry.encode): the same
bytes as in one go, the loop's other tasks get their turns meanwhile, and what a shutdown
interrupts is given back whole."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge import parse
from edge.telemetry import LINES_PER_TURN, SeriesKey, Telemetry, line_protocol
from wire import Reading

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
DEVICES = 5 * LINES_PER_TURN + 7

pytestmark = pytest.mark.anyio


def telemetry_with_readings(directory: Path) -> Telemetry:
    devices = "".join(f"  - {{id: gas-{i}, kind: gas, unit: '{i % 9}'}}\n" for i in range(DEVICES))
    config = parse(
        f"site: s1\ngateway: gw-1\nbuilding: b1\ndata_dir: {directory}\n"
        "telemetry: {url: 'http://127.0.0.1:9', interval_s: 10, retention_days: 0}\n"
        f"devices:\n{devices}"
    )
    telemetry = Telemetry(config, directory)
    for i, device in enumerate(config.devices):
        reading = Reading(device=device.id, seq=1, ts=T0, values={"gas_lel": i / 3})
        telemetry.reading(device, "b1", reading, T0)
    return telemetry


async def test_encode_gives_the_loop_turns_and_the_lines_of_a_flush(tmp_path: Path) -> None:
    telemetry = telemetry_with_readings(tmp_path / "a")
    reference = telemetry_with_readings(tmp_path / "b")
    try:
        turns = 0
        done = asyncio.Event()

        async def other_task() -> None:
            nonlocal turns
            while not done.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_task())
        await asyncio.sleep(0)  # it starts
        before = turns
        body, count = await telemetry.encode(telemetry.take(T0 + timedelta(seconds=10)))
        done.set()
        await task
        assert count == DEVICES
        expected = reference.downsampler.flush(T0 + timedelta(seconds=10))
        assert body == line_protocol(expected)
        # A turn between each two slices: an alarm waits for one slice, not for all of them.
        assert turns - before >= 2 * (DEVICES // LINES_PER_TURN)
    finally:
        telemetry.close()
        reference.close()


async def test_an_interrupted_encode_gives_every_point_back_once(tmp_path: Path) -> None:
    telemetry = telemetry_with_readings(tmp_path)
    try:
        now = T0 + timedelta(seconds=10)
        taken = telemetry.take(now)
        encoding = asyncio.create_task(telemetry.encode(taken))
        for _ in range(3):  # part of the windows made into points, then a shutdown
            await asyncio.sleep(0)
        encoding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await encoding
        assert taken.points and taken.windows, "interrupted half way, as meant"
        telemetry.give_back(taken)
        body, count = await telemetry.encode(telemetry.take(now))
        assert count == DEVICES
        assert len({line.split(b" ")[0] for line in body.split(b"\n")}) == DEVICES
    finally:
        telemetry.close()


async def test_nothing_taken_is_nothing_to_write(tmp_path: Path) -> None:
    telemetry = telemetry_with_readings(tmp_path)
    try:
        assert await telemetry.encode(telemetry.take(T0)) == (b"", 0)  # no window ended yet
    finally:
        telemetry.close()


def test_a_clock_set_back_ends_the_windows_ahead_of_it(tmp_path: Path) -> None:
    telemetry = telemetry_with_readings(tmp_path)
    try:
        sampler = telemetry.downsampler
        ahead = sampler.ended(T0 - timedelta(minutes=5))  # NTP set the clock 5 min back
        assert len(ahead) == DEVICES, "taken, not merged with the readings of another span"
        assert sampler.ended(T0 + timedelta(hours=1), everything=True) == []
    finally:
        telemetry.close()


def test_the_last_flush_is_made_in_one_go(tmp_path: Path) -> None:
    telemetry = telemetry_with_readings(tmp_path)
    reference = telemetry_with_readings(tmp_path / "b")
    try:
        body, count = telemetry.encode_now(telemetry.take(T0, everything=True))
        assert count == DEVICES
        assert body == line_protocol(reference.downsampler.flush(T0, everything=True))
    finally:
        telemetry.close()
        reference.close()


def test_a_value_late_for_a_taken_window_counts_in_the_next(tmp_path: Path) -> None:
    telemetry = telemetry_with_readings(tmp_path)
    try:
        sampler = telemetry.downsampler
        assert len(sampler.ended(T0 + timedelta(seconds=10))) == DEVICES
        # A batch's later reading, judged after the flush with the time of its arrival.
        key = SeriesKey("gas-0", "gas_lel", "gas", "b1", "0")
        sampler.add(key, 9.0, T0 + timedelta(seconds=5))
        [(_, window)] = sampler.ended(T0 + timedelta(seconds=20))
        assert window.start == int((T0 + timedelta(seconds=10)).timestamp()), (
            "a second point at the taken window's time would overwrite the first"
        )
        assert window.count == 1 and window.last == 9.0
    finally:
        telemetry.close()
