"""Telemetry's privacy and retention at the gateway: k-anonymous elder-care aggregates, buffered
batches that expire, and delivered outbox entries that leave the disk. Time is passed in."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from influxdb_client.client.write.point import Point

from edge import parse
from edge.outbox import Outbox
from edge.telemetry import Downsampler, SeriesKey, Telemetry, TelemetryBuffer
from wire import Reading

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
HEART = SeriesKey("", "heart_rate_bpm", "wearable", "b1", None, private=True)
GAS = SeriesKey("gas-1", "gas_lel", "gas", "b1", "101")


def line_of(point: Point) -> str:
    return str(point.to_line_protocol())  # type: ignore[no-untyped-call]  # untyped library


def fields(line: str) -> set[str]:
    """The field names of one line-protocol line."""
    _, field_set, _ = line.rsplit(" ", 2)
    return {pair.split("=", 1)[0] for pair in field_set.split(",")}


def test_a_private_window_with_fewer_than_k_devices_is_withheld_and_counted() -> None:
    sampler = Downsampler("s1", "gw-1", interval_s=10, k_anonymity=3)
    for device, value in (("watch-1", 71.0), ("watch-2", 88.0), ("watch-1", 73.0)):
        sampler.add(HEART, value, T0, device)
    assert sampler.flush(T0 + timedelta(seconds=10)) == []
    assert sampler.suppressed == 1


def test_a_private_window_of_k_devices_gives_count_and_mean_only() -> None:
    sampler = Downsampler("s1", "gw-1", interval_s=10, k_anonymity=3)
    for device, value in (("watch-1", 70.0), ("watch-2", 80.0), ("watch-3", 90.0)):
        sampler.add(HEART, value, T0, device)
    [point] = sampler.flush(T0 + timedelta(seconds=10))
    line = line_of(point)
    assert fields(line) == {"count", "mean"}
    assert "mean=80" in line and "device=" not in line and "unit=" not in line
    assert sampler.suppressed == 0


def test_other_kinds_keep_min_max_last_per_device() -> None:
    sampler = Downsampler("s1", "gw-1", interval_s=10, k_anonymity=3)
    for value in (1.0, 3.0, 2.0):
        sampler.add(GAS, value, T0)
    sampler.add(GAS, 5.0, T0 + timedelta(seconds=10))  # the next window's
    [point] = sampler.flush(T0 + timedelta(seconds=10))  # the first has ended, not the next
    line = line_of(point)
    assert fields(line) == {"count", "mean", "min", "max", "last"}
    assert "device=gas-1" in line and "max=3" in line and "last=2" in line


def test_the_agent_side_feeds_private_kinds_by_device_and_honours_k(tmp_path: Path) -> None:
    config = parse(
        f"""\
site: s1
gateway: gw-1
building: b1
data_dir: {tmp_path}
devices:
  - {{id: watch-1, kind: wearable, unit: "101"}}
  - {{id: watch-2, kind: wearable, unit: "102"}}
  - {{id: bed-1, kind: bed, unit: "101"}}
telemetry: {{url: 'http://127.0.0.1:9', interval_s: 10, k_anonymity: 2, retention_days: 0}}
"""
    )
    telemetry = Telemetry(config, tmp_path)
    try:
        devices = {d.id: d for d in config.devices}
        for n, device in enumerate(("watch-1", "watch-2", "bed-1")):
            metric = "bed_occupied" if device == "bed-1" else "heart_rate_bpm"
            reading = Reading(device=device, seq=n, ts=T0, values={metric: 60.0 + n})
            telemetry.reading(devices[device], "b1", reading, T0)
        points = telemetry.downsampler.flush(T0 + timedelta(seconds=10))
        lines = [line_of(p) for p in points]
        # Two wearables meet k=2; the single bed does not.
        assert len(lines) == 1 and "kind=wearable" in lines[0] and "mean=60.5" in lines[0]
        assert telemetry.downsampler.suppressed == 1
    finally:
        telemetry.close()


def test_buffered_batches_expire_after_the_retention_period(tmp_path: Path) -> None:
    buffer = TelemetryBuffer(tmp_path / "telemetry.sqlite3", max_bytes=1_000_000)
    day = 86_400
    now = int(T0.timestamp())
    buffer.push(b"old", now - 91 * day)
    buffer.push(b"recent", now - 89 * day)
    assert buffer.expire(now, 90 * day) == 1
    assert buffer.depth() == 1 and buffer.expired_batches == 1
    oldest = buffer.oldest()
    assert oldest is not None and oldest[1] == b"recent"
    buffer.close()


def test_a_buffer_from_before_retention_is_upgraded_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE batch (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
    db.execute("INSERT INTO batch (body) VALUES (?)", (b"kept",))
    db.commit()
    db.close()
    buffer = TelemetryBuffer(path, max_bytes=1_000_000)
    # Counted as made when upgraded: nothing is lost on the first purge.
    assert buffer.expire(int(datetime.now(UTC).timestamp()), 86_400) == 0
    assert buffer.depth() == 1
    buffer.close()


def test_a_delivered_outbox_entry_leaves_the_disk(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    secret = b"fall-detected-for-resident-7f3a9c"
    now_ms = int(T0.timestamp() * 1000)
    outbox.add("id-1", "anmin/v1/s1/gw-1/alert", secret, life_safety=True, now_ms=now_ms)
    outbox.prune(now_ms, max_age_ms=10**9, max_entries=1000)
    assert outbox.remove(["id-1"]) == [None]  # the hub acknowledged it
    outbox.prune(now_ms + 60_000, max_age_ms=10**9, max_entries=1000)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret not in on_disk
    assert outbox.depth() == 0
    outbox.close()


def test_a_full_buffer_disk_does_not_stop_the_gateway(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full" (a page limit, not a mock): flush returns
    False and counts, instead of raising into the agent's task group."""
    config = parse(
        f"""\
site: s1
gateway: gw-1
building: b1
data_dir: {tmp_path}
devices:
  - {{id: gas-1, kind: gas, unit: "101"}}
telemetry: {{url: 'http://127.0.0.1:9', interval_s: 1, retention_days: 0}}
"""
    )
    telemetry = Telemetry(config, tmp_path)
    try:
        db = telemetry.buffer._db  # the real buffer, capped at its current size
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages}")
        [gas] = config.devices
        for n in range(200):
            reading = Reading(device="gas-1", seq=n, ts=T0, values={"gas_lel": 1.0 + n})
            telemetry.reading(gas, "b1", reading, T0 + timedelta(seconds=n))
        assert telemetry.flush(T0 + timedelta(seconds=300), everything=True) is False
        assert telemetry.writer.counters["buffer_errors"] >= 1
        assert telemetry.writer.counters["batches_lost"] == 1  # nobody at :9 either
    finally:
        telemetry.close()


def test_the_buffers_depth_is_kept_as_batches_come_and_go(tmp_path: Path) -> None:
    """Read by the agent's loop without SQL or the lock: it must stay what the table says."""
    path = tmp_path / "telemetry.sqlite3"
    buffer = TelemetryBuffer(path, max_bytes=2_000)
    now = int(T0.timestamp())

    def table() -> int:
        db = sqlite3.connect(path)
        try:
            return int(db.execute("SELECT count(*) FROM batch").fetchone()[0])
        finally:
            db.close()

    for i in range(5):  # made 0-4 days ago; the fifth is over the bound: the first goes
        buffer.push(b"x" * 500, now - i * 86_400)
    assert buffer.depth() == 4 == table() and buffer.dropped_batches == 1
    assert buffer.expire(now, 2 * 86_400 - 1) == 3  # those 2, 3 and 4 days old
    assert buffer.depth() == 1 == table()
    buffer.push(b"y", now)
    oldest = buffer.oldest()
    assert oldest is not None
    buffer.remove(oldest[0])
    buffer.remove(oldest[0])  # twice: nothing more goes
    assert buffer.depth() == 1 == table()
    buffer.close()
    reopened = TelemetryBuffer(path, max_bytes=2_000)
    assert reopened.depth() == 1 == table()
    reopened.close()
