"""Telemetry: downsampled series to InfluxDB, buffered on disk while InfluxDB is away.

Readings are summarised per device and metric over a fixed window (min, max, mean, last,
count) and written through InfluxDB's v1 ``/write`` API, which 1.x speaks natively, 2.x through
its DBRP mapping and 3.x as well. Line protocol comes from influxdb_client's ``Point`` (its
escaping of tags and fields is not something to hand-roll). A failed batch goes to a bounded
SQLite buffer and is written, oldest first, when InfluxDB answers again.

Elder-care kinds (``PRIVATE_KINDS``) are k-anonymous: one series per building and metric, with
only ``count`` and ``mean``, written only for a window to which at least ``k_anonymity``
distinct devices contributed (a building with one wearable would otherwise publish one
resident's heart rate as its min, max and last). Retention: the edge makes a default retention
policy of ``retention_days`` on its database, and its buffer drops batches older than that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec
import urllib3
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from edge.config import PRIVATE_KINDS, DeviceConfig, EdgeConfig, TelemetryConfig
from edge.sqlite import connect
from wire import AlertEvent, Reading

log = logging.getLogger(__name__)

# Measurements; the dashboards (grafana/) query these names.
SENSOR = "sensor"  # tags: site, gateway, building, unit, device, kind, metric
GATEWAY = "gateway"  # tags: site, gateway; fields: counters and gauges of the agent
ALERT = "alert"  # tags: site, gateway, building, unit, device, kind, severity, phase

# Points made line protocol between two turns of the agent's loop (~1-2 ms of its time).
LINES_PER_TURN = 100


def line_protocol(points: list[Point]) -> bytes:
    return "\n".join(p.to_line_protocol() for p in points).encode("utf-8")


@dataclass(slots=True)
class _Window:
    start: int  # epoch seconds, aligned to the interval
    low: float
    high: float
    total: float
    last: float
    count: int
    # A private series: the devices that contributed, for the k-anonymity threshold.
    devices: set[str] | None = None


class SeriesKey(msgspec.Struct, frozen=True):
    """One series (hashable: the downsampler's key; made per reading, so a msgspec Struct)."""

    device: str
    metric: str
    kind: str
    building: str
    unit: str | None
    # A per-building aggregate of elder-care devices: count and mean, k devices or nothing.
    private: bool = False


@dataclass
class Downsampler:
    """Per device and metric: min, max, mean, last and count over ``interval_s`` windows.

    Private series (``SeriesKey.private``) give only count and mean, and only for windows of at
    least ``k_anonymity`` distinct devices; ``suppressed`` counts the windows withheld.
    """

    site: str
    gateway: str
    interval_s: int = 10
    k_anonymity: int = 3
    # With the agent in parts, each part's building aggregate is tagged with its part: the
    # same series and time from two parts would overwrite each other in InfluxDB.
    part: int | None = None
    suppressed: int = 0
    # Open windows by their start (epoch s), then by series: the windows of one interval end
    # together, so a flush takes whole intervals, not window by window (10,000 devices: ms).
    _open: dict[int, dict[SeriesKey, _Window]] = field(default_factory=dict)
    # Windows starting before this were taken (``ended``); None: none yet.
    _taken: int | None = None

    def add(self, key: SeriesKey, value: float, at: datetime, device: str = "") -> None:
        """Add a value (from ``device``, for a private series) to its window."""
        second = int(at.timestamp())
        start = second - second % self.interval_s
        if self._taken is not None and start < self._taken:
            # Late for a window already taken (a batch's later readings are judged after
            # awaits): a second point of that series and time would overwrite the first in
            # InfluxDB, so it counts in the first window still open.
            start = self._taken
        windows = self._open.get(start)
        if windows is None:
            windows = self._open[start] = {}
        window = windows.get(key)
        if window is None:
            window = windows[key] = _Window(start, value, value, value, value, 1)
            if key.private:
                window.devices = set()
        else:
            window.low = min(window.low, value)
            window.high = max(window.high, value)
            window.total += value
            window.last = value
            window.count += 1
        if window.devices is not None:
            window.devices.add(device)

    def flush(self, now: datetime, *, everything: bool = False) -> list[Point]:
        """Points of every window that has ended by ``now`` (or all of them, at shutdown)."""
        return self.points(self.ended(now, everything=everything))

    def ended(self, now: datetime, *, everything: bool = False) -> list[tuple[SeriesKey, _Window]]:
        """``flush``'s windows, taken, oldest first; their points not made yet (``points``).
        Windows that start after ``now``'s are taken too: the clock was set back, and later
        readings must not be merged into a window of another span of time."""
        limit = int(now.timestamp())
        current = limit - limit % self.interval_s
        ended: list[tuple[SeriesKey, _Window]] = []
        for start in sorted(self._open):
            if everything or start + self.interval_s <= limit or start > current:
                ended.extend(self._open.pop(start).items())
        self._taken = current
        return ended

    def points(self, ended: list[tuple[SeriesKey, _Window]]) -> list[Point]:
        return [p for key, window in ended for p in self._points(key, window)]

    def _points(self, key: SeriesKey, window: _Window) -> list[Point]:
        if window.devices is not None and len(window.devices) < self.k_anonymity:
            self.suppressed += 1  # too few devices: the aggregate would single someone out
            return []
        return [self._point(key, window)]

    def _point(self, key: SeriesKey, window: _Window) -> Point:
        point = (
            Point(SENSOR)
            .tag("site", self.site)
            .tag("gateway", self.gateway)
            .tag("building", key.building)
            .tag("kind", key.kind)
            .tag("metric", key.metric)
            .field("mean", window.total / window.count)
            .field("count", window.count)
            .time(window.start, WritePrecision.S)
        )
        if not key.private:
            # min, max and last are one device's own values: only for non-private series.
            point = point.field("min", window.low).field("max", window.high)
            point = point.field("last", window.last)
        if key.device:
            point = point.tag("device", key.device)
        if key.unit:
            point = point.tag("unit", key.unit)
        if key.private and self.part is not None:
            point = point.tag("part", str(self.part))
        return point  # type: ignore[no-any-return]  # influxdb_client's builder is untyped


class TelemetryBuffer:
    """Line-protocol batches that could not be written yet: SQLite, bounded in bytes."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self.expired_batches = 0
        self._lock = threading.Lock()
        # What is deleted (written, expired) is overwritten with zeros, not left in free pages.
        self._db = connect(path, durable=False, secure_delete=True)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batch (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " body BLOB NOT NULL, created_s INTEGER NOT NULL DEFAULT 0)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(batch)")}
        if "created_s" not in columns:
            # A buffer from before retention: its batches count as made now.
            self._db.execute("ALTER TABLE batch ADD COLUMN created_s INTEGER NOT NULL DEFAULT 0")
            self._db.execute("UPDATE batch SET created_s = ?", (int(time.time()),))
        # Kept as batches come and go: the agent's loop reads it (stats) without the lock,
        # which the telemetry's thread holds while it writes.
        (self._depth,) = self._db.execute("SELECT count(*) FROM batch").fetchone()

    def push(self, body: bytes, created_s: int | None = None) -> None:
        created = int(time.time()) if created_s is None else created_s
        with self._lock:
            self._db.execute("INSERT INTO batch (body, created_s) VALUES (?, ?)", (body, created))
            self._depth += 1
            # Over the bound the oldest telemetry goes first: it matters least. Counted.
            while self._size() > self.max_bytes:
                (oldest,) = self._db.execute("SELECT min(seq) FROM batch").fetchone()
                if oldest is None:
                    break
                self._db.execute("DELETE FROM batch WHERE seq = ?", (oldest,))
                self._depth -= 1
                self.dropped_batches += 1

    def expire(self, now_s: int, max_age_s: int) -> int:
        """Drop batches older than ``max_age_s`` (the retention period); returns how many."""
        with self._lock:
            gone = self._db.execute(
                "DELETE FROM batch WHERE created_s < ?", (now_s - max_age_s,)
            ).rowcount
            self._depth -= gone
        self.expired_batches += gone
        return int(gone)

    def _size(self) -> int:
        (size,) = self._db.execute("SELECT coalesce(sum(length(body)), 0) FROM batch").fetchone()
        return int(size)

    def oldest(self) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._db.execute("SELECT seq, body FROM batch ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def remove(self, seq: int) -> None:
        with self._lock:
            self._depth -= self._db.execute("DELETE FROM batch WHERE seq = ?", (seq,)).rowcount

    def depth(self) -> int:
        """How many batches wait to be written."""
        return int(self._depth)

    def size(self) -> int:
        with self._lock:
            return self._size()

    def close(self) -> None:
        with self._lock:
            self._db.close()


_UNREACHABLE = "\0unreachable"


class InfluxWriter:
    """Writes line protocol to InfluxDB's v1 ``/write``; buffers what fails. Blocking: the
    agent calls it from a worker thread."""

    def __init__(
        self,
        url: str,
        database: str,
        buffer: TelemetryBuffer,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        query = {"db": database, "precision": "s"}
        credentials = {"u": username, "p": password or ""} if username else {}
        query |= credentials
        self.database = database
        self.endpoint = f"{url.rstrip('/')}/write?{urllib.parse.urlencode(query)}"
        self.query_endpoint = f"{url.rstrip('/')}/query?{urllib.parse.urlencode(credentials)}"
        self.buffer = buffer
        self.counters: Counter[str] = Counter()
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_s), retries=False)

    def ensure_retention(self, days: int) -> bool | None:
        """Make ``anmin`` the database's default retention policy, ``days`` long.

        True: done; None: InfluxDB did not answer (try again later); False: it refused (e.g.
        InfluxDB 2.x, where a bucket's retention is set on the bucket), logged once.
        """
        database = self.database.replace('"', "")
        spec = f'ON "{database}" DURATION {days}d REPLICATION 1 DEFAULT'
        answer = self._query(f'CREATE RETENTION POLICY "anmin" {spec}')
        if answer is not None and ("conflicts" in answer or "already exists" in answer):
            # It exists with another duration: the configured one wins.
            answer = self._query(f'ALTER RETENTION POLICY "anmin" {spec}')
        if answer is None:
            return True
        if answer == _UNREACHABLE:
            return None
        self.counters["retention_errors"] += 1
        log.error(
            "influxdb refused the retention policy (%s); set %d days on the database or bucket"
            " by hand",
            answer,
            days,
        )
        return False

    def _query(self, statement: str) -> str | None:
        """Run one InfluxQL statement; its error, ``_UNREACHABLE``, or None when it worked."""
        try:
            response = self._http.request(
                "POST", self.query_endpoint, fields={"q": statement}, encode_multipart=False
            )
        except urllib3.exceptions.HTTPError:
            return _UNREACHABLE
        if response.status >= 500:
            return _UNREACHABLE
        try:
            results = json.loads(response.data or b"{}").get("results") or [{}]
            error = results[0].get("error") or json.loads(response.data).get("error")
        except (ValueError, AttributeError):
            error = f"HTTP {response.status}"
        if response.status >= 400 and not error:
            error = f"HTTP {response.status}"
        return str(error) if error else None

    def write_lines(self, body: bytes, count: int, now: datetime | None = None) -> bool:
        """Write ``count`` points made line protocol (``body``), after anything buffered;
        False if InfluxDB is not taking writes."""
        if count:
            created = None if now is None else int(now.timestamp())
            try:
                self.buffer.push(body, created)  # durable first; removed once written
            except sqlite3.Error as exc:
                # The buffer's disk is full or broken: telemetry must never stop the gateway.
                # Straight to InfluxDB instead; lost (and counted) if that fails too.
                self.counters["buffer_errors"] += 1
                log.warning("telemetry buffer unusable (%s); writing without it", exc)
                if not self._post(body):
                    self.counters["batches_lost"] += 1
                    return False
            self.counters["points"] += count
        return self.drain()

    def drain(self) -> bool:
        while (entry := self.buffer.oldest()) is not None:
            seq, body = entry
            if not self._post(body):
                return False
            self.buffer.remove(seq)
            self.counters["batches_written"] += 1
        return True

    def _post(self, body: bytes) -> bool:
        try:
            response = self._http.request(
                "POST", self.endpoint, body=body, headers={"Content-Type": "text/plain"}
            )
        except urllib3.exceptions.HTTPError as exc:
            self.counters["write_errors"] += 1
            log.debug("influxdb unreachable: %s", exc)
            return False
        if response.status == 204:
            return True
        self.counters["write_errors"] += 1
        if 400 <= response.status < 500:
            # InfluxDB refuses this batch itself (e.g. a field type conflict): retrying it
            # would block every later batch, so it is dropped and counted.
            self.counters["batches_refused"] += 1
            log.error("influxdb refused a batch: %s %s", response.status, response.data[:200])
            return True
        return False


@dataclass(slots=True)
class Taken:
    """Telemetry taken for one write: points made already, and ended windows (made into
    points as the line protocol is made, a slice at a time)."""

    points: list[Point]
    windows: list[tuple[SeriesKey, _Window]]


class Telemetry:
    """What the agent holds: the downsampler, the pending points and the writer."""

    def __init__(self, config: EdgeConfig, data_dir: Path, part: int | None = None) -> None:
        """``part``: this agent's part, when it runs as several (edge/parts.py)."""
        settings = config.telemetry or TelemetryConfig()
        self.site = config.site
        self.gateway = config.gateway
        self.downsampler = Downsampler(
            config.site,
            config.gateway,
            settings.interval_s,
            k_anonymity=settings.k_anonymity,
            part=part,
        )
        self.retention_days = settings.retention_days
        # None: not yet known (InfluxDB not reached); then True or False once it answered.
        self.retention_set: bool | None = None if settings.retention_days else False
        self.buffer = TelemetryBuffer(
            data_dir / "telemetry.sqlite3", int(settings.buffer_max_mb * 1024 * 1024)
        )
        self.writer = InfluxWriter(
            settings.url,
            settings.database,
            self.buffer,
            username=settings.username,
            password=settings.password,
        )
        # Points made on the loop (alerts, the gateway's counters) waiting for the next flush.
        self._pending: list[Point] = []
        self._sending = threading.Lock()

    def reading(self, device: DeviceConfig, building: str, reading: Reading, at: datetime) -> None:
        private = device.kind in PRIVATE_KINDS
        for metric, value in reading.values.items():
            if private:
                # Privacy by design: a resident's movements and vital signs stay on the
                # gateway; only the building's k-anonymous aggregate leaves it.
                key = SeriesKey("", metric, device.kind, building, None, private=True)
                self.downsampler.add(key, value, at, device.id)
            else:
                key = SeriesKey(device.id, metric, device.kind, building, device.unit)
                self.downsampler.add(key, value, at)

    def scores(
        self, device: DeviceConfig, building: str, scores: dict[str, float], at: datetime
    ) -> None:
        """Detector scores (0..1) as series ``score_<detector>``, beside the raw channels."""
        for name, value in scores.items():
            key = SeriesKey(device.id, f"score_{name}", device.kind, building, device.unit)
            self.downsampler.add(key, value, at)

    def alert(self, event: AlertEvent) -> None:
        point = (
            Point(ALERT)
            .tag("site", event.site)
            .tag("gateway", event.gateway)
            .tag("building", event.building or "")
            .tag("device", event.device or "")
            .tag("kind", event.kind)
            .tag("severity", event.severity.value)
            .tag("phase", event.phase.value)
            .field("message", event.message)
            .field("id", event.id)
            .time(event.ts, WritePrecision.S)
        )
        if event.unit:
            point = point.tag("unit", event.unit)
        self._pending.append(point)

    def gateway_point(self, stats: dict[str, float], at: datetime) -> None:
        point = Point(GATEWAY).tag("site", self.site).tag("gateway", self.gateway)
        for name, value in sorted(stats.items()):
            # Field names are stable and simple: counters like rejected.bad_topic become
            # rejected_bad_topic, and every value is a float so types never conflict.
            point = point.field(name.replace(".", "_"), float(value))
        self._pending.append(point.time(at, WritePrecision.S))

    def flush(self, now: datetime, everything: bool = False) -> bool:
        """Write what is ready, blocking, on the thread that feeds the readings (or with
        nothing else touching the telemetry). The agent does it in three parts (``take``,
        ``encode``, ``send``), so that only the disk and the network wait in a thread."""
        return self.send(*self.encode_now(self.take(now, everything)), now)

    def take(self, now: datetime, everything: bool = False) -> Taken:
        """What is ready to write: alerts and gateway counters, and the windows ended by
        ``now`` (all, at shutdown). The downsampler is the agent loop's alone: taken from
        another thread, a reading in a new window could land in one being taken and be lost."""
        taken = Taken(self._pending, self.downsampler.ended(now, everything=everything))
        self._pending = []
        return taken

    async def encode(self, taken: Taken) -> tuple[bytes, int]:
        """The line protocol of what was taken, and how many points, made on the agent's loop
        a slice at a time. Not in a thread: it is Python work (a window's point ~2 µs, its
        line ~10 µs in influxdb_client), and a thread doing it holds the GIL from the loop for
        up to 5 ms at a time (``sys.getswitchinterval``). Measured
        (bench/telemetry_stall.py): a timer on the loop fired 6-18 ms late (p99) while a
        thread made 1,000 devices' lines, 23-27 ms for 10,000; 3-5 ms made here."""
        points, ended, lines = taken.points, taken.windows, []
        while ended:  # moved over as made, so that give_back makes no window twice
            points += self.downsampler.points(ended[:LINES_PER_TURN])
            del ended[:LINES_PER_TURN]
            await asyncio.sleep(0)
        for start in range(0, len(points), LINES_PER_TURN):
            lines += [p.to_line_protocol() for p in points[start : start + LINES_PER_TURN]]
            await asyncio.sleep(0)
        return "\n".join(lines).encode("utf-8"), len(points)

    def encode_now(self, taken: Taken) -> tuple[bytes, int]:
        """``encode`` in one go."""
        points = taken.points + self.downsampler.points(taken.windows)
        taken.windows = []
        return line_protocol(points), len(points)

    def give_back(self, taken: Taken) -> None:
        """What was taken and not written after all (a shutdown): first in the next flush."""
        self._pending[:0] = taken.points + self.downsampler.points(taken.windows)

    def send(self, body: bytes, count: int, now: datetime) -> bool:
        """Buffer and write ``count`` points of line protocol, after any buffered before;
        blocking (a worker thread's), and False if InfluxDB is not taking writes. One at a
        time: a send cancelled at shutdown runs on in its thread beside the last one, and two
        draining the buffer at once could write a batch twice."""
        with self._sending:
            return self._send(body, count, now)

    def _send(self, body: bytes, count: int, now: datetime) -> bool:
        try:
            self.purge(now)
            return self.writer.write_lines(body, count, now)
        except sqlite3.Error as exc:  # the buffer's disk; the gateway's alarms must go on
            self.writer.counters["buffer_errors"] += 1
            log.warning("telemetry buffer unusable (%s); will try again", exc)
            return False

    def purge(self, now: datetime) -> int:
        """Retention at the gateway: set InfluxDB's policy once, expire old buffered batches."""
        if self.retention_set is None:
            self.retention_set = self.writer.ensure_retention(self.retention_days)
        if not self.retention_days:
            return 0
        return self.buffer.expire(int(now.timestamp()), self.retention_days * 86_400)

    def close(self) -> None:
        self.buffer.close()
