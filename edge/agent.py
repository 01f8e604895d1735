"""The edge agent: what runs on a building's gateway.

Readings come in from the devices, the rules decide, and an alarm is acted on locally first
(siren, valve), written to the outbox, then sent to the hub until the hub acknowledges it.
Broadcasts from the hub are played on the building's speakers and their receipts sent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from bus import Broker, Incoming, LastWill, MqttLink, NotConnected
from bus.mqtt import Tls
from bus.tasks import stop
from edge.config import (
    PRIVATE_KINDS,
    BrokerConfig,
    DeviceConfig,
    EdgeConfig,
    part_of,
    parts_problems,
)
from edge.ingest import Ingest, Rejection
from edge.latency import ALARM_BUCKETS_S, Latency
from edge.outbox import Entry, Outbox
from edge.parts import (
    BOARD_EVERY_S,
    PART_DIR,
    Part,
    PartFigures,
    part_dir,
    summed_stats,
)
from edge.snapshots import Snapshots
from edge.warnings import local_warning

if TYPE_CHECKING:
    from edge.telemetry import Telemetry
from rules import ConfigError, Engine, RuleSet, Transition
from rules.engine import AlertTrack, EngineError, EngineState
from wire import (
    Ack,
    AlertEvent,
    Broadcast,
    Codec,
    Command,
    DeadLetter,
    Heartbeat,
    Phase,
    Reading,
    Reason,
    Receipt,
    Severity,
    WireError,
    cap,
    topics,
    uuid7,
)
from wire.models import CommandAction
from wire.replay import DeviceInfo
from wire.topics import Channel

T = TypeVar("T")
log = logging.getLogger(__name__)

ENGINE_STATE = "engine"  # the name of the rules' whole state (edge/snapshots.py)
# Its detector models, apart: most of its bytes, new only every MODELS_EVERY_S (SD card wear).
ENGINE_MODELS = "engine.models"
# With each alert only its rule's alert tracks are saved, in the outbox (a few kB, not the
# whole state with the learned models, about 1 MB at 1,000 devices, fsynced per alarm). They
# are stamped, and those stamped after the saved whole state go into it on restore.
ENGINE_ALERTS = "engine.alerts/"  # + rule id
# + device id: a device discovery took in, as it announced itself. Kept in the outbox's own
# database, written on its thread: committed before any alarm of that device is, so a restart
# that finds the alarm finds the device (the whole rule state is saved only now and then).
DISCOVERED = "devices.discovered/"
_DISCOVERED = msgspec.msgpack.Decoder(DeviceConfig)
_DISCOVERED_ENCODER = msgspec.msgpack.Encoder()


def discovered_on_disk(data_dir: Path) -> list[DeviceConfig]:
    """The devices discovery took in, as the agent saved them (read only, beside a running
    agent: ``anmin edge devices``), every part's; none if nothing was saved yet. Damaged
    entries are left out."""
    found = _discovered_in(data_dir / "outbox.sqlite3")
    for path in sorted(data_dir.glob(PART_DIR.format("*") + "/outbox.sqlite3")):
        found += _discovered_in(path)
    one: dict[str, DeviceConfig] = {}
    for device in found:  # a device that moved parts: part 0's entry, else the first found
        one.setdefault(device.id, device)
    return sorted(one.values(), key=lambda device: device.id)


def _discovered_in(path: Path) -> list[DeviceConfig]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT blob FROM rule_state WHERE substr(name, 1, ?) = ?",
            (len(DISCOVERED), DISCOVERED),
        ).fetchall()
    except sqlite3.OperationalError:  # a file from before any save
        return []
    finally:
        db.close()
    out = []
    for (blob,) in rows:
        with contextlib.suppress(msgspec.DecodeError):
            out.append(_DISCOVERED.decode(blob))
    return out


HAND_ON_WAIT_S = 30.0  # how long a reading for another part waits for that part to subscribe


class Retired(Exception):  # not an error: a retiring part's normal end
    """A retiring part has sent everything it held (edge/parts.py)."""


STATE_SAVE_S = 5.0  # how often the rules' state is saved between alerts
SIREN_RETRY_S = 5.0  # how soon a siren not reported on is commanded again
# Detector models pickled per turn of the loop, before a state save (a pump's robust z-score
# ~0.15 ms, a forest ~23 ms: see docs/detection.md).
MODELS_SLICE = 4
ENCODE_SLICE = 100  # devices' rule state encoded per turn of the loop, before a state save
# Dead letters, per topic and reason: the first at once, then at most one per this long, which
# says how many more were withheld. A device gone wrong must not flood the hub, whose intake
# carries the alarms (measured: 40,000 letters at 5,000/s held an alarm back by 7-9 s).
DEADLETTER_EVERY_S = 10.0
DEADLETTER_KEYS = 4096  # (topic, reason) pairs remembered; the oldest are forgotten first
DEADLETTER_DETAIL = 256  # a dead letter's detail is cut to this many characters
UPLINK_BATCH = 100  # outbox entries read per pass
HEALTH_SLICE = 1000  # devices whose silence the health pass checks per turn of the loop
UPLINK_BURST = 20  # new alerts sent at once; more go 10 ms apart

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _within(now: datetime, since: datetime, seconds: float) -> bool:
    """Whether ``now`` is less than ``seconds`` after ``since``. A clock set back since (a
    negative wait) ends it: a retry or a letter must not wait out the whole jump."""
    return 0 <= (now - since).total_seconds() < seconds


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _broker(config: BrokerConfig) -> Broker:
    tls = None
    if config.tls is not None:
        tls = Tls(config.tls.ca_file, config.tls.cert_file, config.tls.key_file)
    return Broker(config.host, config.port, config.username, config.password, tls)


@dataclass(frozen=True, slots=True)
class Observed:
    """Something the agent did, for observers (the demo's console, tests)."""

    what: str  # "alert", "command", "uplink", "ack", "broadcast", "receipt", "deadletter"
    detail: str
    at: datetime


class EdgeAgent:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        clock: Clock = utc_now,
        data_dir: Path | None = None,
        codec: Codec | None = None,
        observer: Callable[[Observed], None] | None = None,
        part: Part | None = None,
    ) -> None:
        """``part``: this process's place when the agent runs as several (edge/parts.py)."""
        self.config = config
        self.clock = clock
        self.codec = codec or Codec()
        self.observer = observer
        self.part = part
        self.data_dir = data_dir or Path(config.data_dir)
        if part is not None:
            self.data_dir = part_dir(self.data_dir, part.index)
        self.outbox = Outbox(self.data_dir / "outbox.sqlite3")
        self.snapshots = Snapshots(self.data_dir / "rules.sqlite3")
        devices = config.devices
        if part is None:
            self.ingest = Ingest(config.site, config.gateway, devices, self.codec, config.discovery)
        else:
            self.ingest = Ingest(
                config.site,
                config.gateway,
                [d for d in devices if part.owns(d)],
                self.codec,
                config.discovery,
                owns=part.owns,
                elsewhere=[d for d in devices if not part.owns(d)],
            )
            self.ingest.reports_unknown = part.speaks
        self.counters: Counter[str] = Counter()
        self._telemetry_seen: Counter[str] = Counter()  # telemetry failures, by what failed
        # Devices discovery took in before this start (their retained statuses may be gone
        # from a broker that restarted without its store).
        saved_devices = self._load_discovered()
        if part is not None:
            # Every part's, as the parts were forked (a change of parts moves some): each
            # takes in its own, keeps it in its own directory, and knows the others'.
            here = {device.id for device in saved_devices}
            saved_devices += [d for d in part.discovered if d.id not in here]
            for device in self.ingest.take_in(saved_devices):
                if device.id not in here:
                    self.outbox.save_state(
                        DISCOVERED + device.id, _DISCOVERED_ENCODER.encode(device), durable=True
                    )
        else:
            self.ingest.take_in(saved_devices)
        self._drop_not_taken_in(saved_devices)
        # The rules' state survives a restart: hold timers keep running, alarms stay raised,
        # learned routines are kept.
        found = self.snapshots.load(ENGINE_STATE)
        legacy = self.outbox.load_state(ENGINE_STATE)
        if legacy is not None:  # a gateway from before rules.sqlite3: its state in the outbox
            try:
                if found is None:  # moved (stamped before every part), then dropped from there
                    found = (-1, legacy)
                    self.snapshots.save(ENGINE_STATE, legacy, -1)
                self.outbox.drop_state(ENGINE_STATE)
            except sqlite3.Error as exc:  # a full or read-only card: run on, move it later
                log.error("edge: rule state not moved to %s (%s)", self.snapshots.path, exc)
        since, saved = found if found is not None else (-1, None)
        stamped = self.outbox.load_states(ENGINE_ALERTS)
        parts = {name: blob for name, (stamp, blob) in stamped.items() if stamp > since}
        # The last stamp given to an alert part (see _alert_part); counts on across restarts.
        self._stamp = max([0, since, *(stamp for stamp, _ in stamped.values())])
        self.engine = Engine(config.rules)
        # What the detectors import (numpy, ~70 ms) is loaded now, not on the loop at the
        # first reading a detector scores, which would hold every alarm behind it that long.
        self.engine.load_detectors()
        if saved or parts:
            try:
                saved = with_alert_parts(saved, parts)
                self.engine = Engine.restore(config.rules, saved)
            except EngineError as exc:
                log.error("edge: rule state not restored (%s); starting afresh", exc)
                self.counters["state_restore_failed"] += 1
        # The models saved apart, unless the state carried newer ones of its own (a state
        # from before they were apart, written after them by an older agent).
        carried = self.engine.carries_models()
        models = self.snapshots.load(ENGINE_MODELS)
        if models is not None and not (carried and since > models[0]):
            try:
                self.engine.restore_models(models[1])
                carried = False
            except EngineError as exc:
                log.error("edge: detector models not restored (%s); they learn again", exc)
                self.counters["state_restore_failed"] += 1
        # The models round last saved apart; models only the state carried are saved at once
        # (the state is saved without them from now on).
        self._models_saved = self.engine.models_round - (1 if carried else 0)
        self.devices: dict[str, DeviceInfo] = {
            health.config.id: self._info(health.config) for health in self.ingest.devices.values()
        }
        self.engine.add_devices(self.devices.values(), clock())
        self._state_dirty = False
        self._last_snapshot = 0.0
        # Alerts whose siren sounds: alert key -> the device that sounds it.
        self._sirens: dict[str, str] = {}
        self.telemetry: Telemetry | None = None
        if config.telemetry is not None:
            # Imported only here: influxdb_client imports its whole generated API client
            # (~40 MB of RSS, 393 modules), which a gateway without InfluxDB never uses.
            from edge.telemetry import Telemetry

            self.telemetry = Telemetry(config, self.data_dir, None if part is None else part.index)
        self._local_warnings: dict[str, asyncio.Task[None]] = {}
        self._siren_sent: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rule_latency = Latency()  # per reading, the rules with their detectors: /metrics
        # An alarm sent at once by its own task: from its reading read off the socket to its
        # event written to the hub's; and of that, its wait for the durable commit (/metrics).
        self.alarm_latency = Latency(ALARM_BUCKETS_S)
        self.alarm_disk = Latency(ALARM_BUCKETS_S)
        self._ack_waiters: dict[str, asyncio.Future[None]] = {}
        # The alerts the hub has broadcast about (its broadcasts' causes), the last 1,000.
        self._hub_broadcast_causes: dict[str, None] = {}
        self._last_replay_ms = 0  # when the replay loop last looked (a clock set back: below)
        self.started = time.monotonic()
        self.retired = False  # a retiring part that sent all it held (_retire_when_drained)
        # What this part hands on to another (see _hand_on), and how many are not yet out.
        self._handing: asyncio.Queue[Incoming] = asyncio.Queue()
        self._hander: asyncio.Task[None] | None = None
        self._handing_left = 0
        # Every outbox call goes through this one thread, so writes commit in the order the
        # loop made them. The whole rule state is saved from a thread of its own: an alarm's
        # commit never waits behind it.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anmin-outbox")
        self._state_disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anmin-state")
        self._kick = asyncio.Event()  # a new alert is in the outbox
        # New alerts an alarm published itself and has not yet marked sent (_send_at_once),
        # and how many times the uplink has read the outbox for new alerts.
        self._unmarked: dict[str, str | None] = {}  # id -> its alarm's key
        self._outbox_reads = 0
        # The alarms whose new events the last uplink pass held back for an older one's ack
        # (an ack wakes the uplink only for them; else the uplink looks once a second).
        self._held: set[str] = set()
        self._replay_kick = asyncio.Event()  # unacknowledged alerts are due again now
        # Broadcast id -> the speakers whose receipt said "played": a broadcast the hub
        # publishes again (its coverage retry) goes only to the speakers not among them.
        self._broadcasts_seen: OrderedDict[str, set[str]] = OrderedDict()
        self._cancelled: set[str] = set()
        # (topic, reason) -> when its last dead letter went; and those withheld since, with
        # how many and the latest (see DEADLETTER_EVERY_S).
        self._letters_sent: OrderedDict[tuple[str, str], datetime] = OrderedDict()
        self._letters_withheld: dict[tuple[str, str], tuple[int, Rejection]] = {}
        site, gateway = config.site, config.gateway
        self._ack_topic = topics.gateway_topic(Channel.ACK, site, gateway)
        self._alert_topic = topics.gateway_topic(Channel.ALERT, site, gateway)
        self._broadcast_topic = topics.broadcast(site)
        self._hub_online_topic = topics.hub_online()
        upstream_subs = [
            (self._ack_topic, 1),
            (self._broadcast_topic, 1),
            (self._hub_online_topic, 1),
        ]
        local_subs = [(topics.gateway_devices_filter(site, gateway), 1)]
        stale: list[str] = []
        suffix = ""
        if part is not None:
            # Its own devices' topics, and every status (discovery: an announcement may
            # name a flat of this part). Readings of devices no part knows go unheard.
            local_subs = [(topics.gateway_statuses_filter(site, gateway), 1)]
            for health in self.ingest.devices.values():
                local_subs += self._device_subscriptions(health.config.id)
            # What a persistent session may hold from a run with other parts: the single
            # agent's filter, and the topics of the devices now in other parts.
            stale = [topics.gateway_devices_filter(site, gateway)]
            for other in [*config.devices, *part.discovered]:
                if not part.owns(other):
                    stale += [topic for topic, _ in self._device_subscriptions(other.id)]
            if part.count == 1:  # beside retiring parts: all of it, as the single agent
                local_subs, stale = [(topics.gateway_devices_filter(site, gateway), 1)], []
            suffix = "" if part.index == 0 else f"-p{part.index}"
        speaks = part is None or part.speaks
        heartbeat_topic = topics.gateway_topic(Channel.HEARTBEAT, site, gateway)

        def will() -> LastWill:
            offline = Heartbeat(site=site, gateway=gateway, state="offline", ts=self.clock())
            return LastWill(heartbeat_topic, self.codec.encode(offline))

        # A persistent session: the broker keeps QoS 1 readings for us across short outages.
        self.local = MqttLink(
            _broker(config.broker),
            client_id=f"edge-{site}-{gateway}{suffix}",
            subscriptions=local_subs if config.uplink else local_subs + upstream_subs,
            handler=self._on_message,
            persistent=True,
            will=None if config.uplink or not speaks else will,
            on_connect=self._on_upstream_connect if config.uplink is None else None,
            stale=stale,
        )
        self.upstream = self.local
        if config.uplink is not None:
            self.upstream = MqttLink(
                _broker(config.uplink),
                client_id=f"edge-{site}-{gateway}-uplink{suffix}",
                subscriptions=upstream_subs,
                handler=self._on_message,
                persistent=True,
                will=will if speaks else None,
                on_connect=self._on_upstream_connect,
            )

    def _device_subscriptions(self, device: str) -> list[tuple[str, int]]:
        """A part's subscriptions for one device of its own (its status: every part's)."""
        site, gateway = self.config.site, self.config.gateway
        return [
            (topics.reading(site, gateway, device), 1),
            (topics.device_receipt(site, gateway, device), 1),
        ]

    def _info(self, device: DeviceConfig) -> DeviceInfo:
        """What the rules know of a device: where it is and what it is."""
        return DeviceInfo(
            id=device.id,
            kind=device.kind,
            site=self.config.site,
            gateway=self.config.gateway,
            building=self.config.building,
            unit=device.unit,
            room=device.room,
            resident=device.resident,
            interval_s=device.interval_s,
        )

    def _load_discovered(self) -> list[DeviceConfig]:
        """The devices discovery took in before; one whose entry cannot be read (a newer
        gateway's, a damaged card) is not forgotten by the rules until it announces again or
        its announcement is cleared (``Ingest.unreadable``)."""
        out: list[DeviceConfig] = []
        for name, (_, blob) in sorted(self.outbox.load_states(DISCOVERED).items()):
            try:
                out.append(_DISCOVERED.decode(blob))
            except msgspec.DecodeError as exc:
                log.error("edge: discovered device %s not restored (%s)", name, exc)
                self.counters["state_restore_failed"] += 1
                if self.config.discovery is None:  # it could never announce itself again
                    self.outbox.drop_state(name)
                else:
                    self.ingest.unreadable.add(name.removeprefix(DISCOVERED))
        return out

    def _drop_not_taken_in(self, saved: list[DeviceConfig]) -> None:
        """Entries of devices discovery no longer takes in (turned off, a kind left out, a
        lower limit, listed since): dropped, so that turning it on again brings back only
        what announces itself then. The rules forget them as run() starts."""
        for device in saved:
            if self.ingest.discovered.get(device.id) != device:
                self.outbox.drop_state(DISCOVERED + device.id)

    def _take_in(self, device: DeviceConfig, now: datetime) -> None:
        """A device discovery took in (or moved): the rules watch it from now on, and it is
        kept across restarts (committed on the outbox's thread before any alarm of it, which
        syncs it: its own commit need not wait for the disk)."""
        stored = self._queue_io(
            self.outbox.save_state, DISCOVERED + device.id, _DISCOVERED_ENCODER.encode(device)
        )
        self._background(_logged(stored, f"discovered device {device.id} not saved"))
        if self.part is not None:
            self._background(self.local.subscribe(self._device_subscriptions(device.id)))
        info = self._info(device)
        moved = device.id in self.devices
        self.devices[device.id] = info
        self.engine.add_devices([info], now)
        self._state_dirty = True
        where = " ".join(f"{k}={v}" for k, v in (("unit", device.unit), ("room", device.room)) if v)
        log.info(
            "edge: device %s %s by its announcement: %s %s",
            device.id,
            "moved" if moved else "discovered",
            device.kind,
            where or "(building-wide)",
        )
        self._observe("device", f"{device.id} {'moved' if moved else 'discovered'}: {device.kind}")

    async def _settle_devices(self) -> None:
        """Forget the devices the rules know and neither the config lists nor discovery
        keeps (taken out, or the saved state's from before), and clear the alarms that the
        devices' changes left unsupported (``Engine.forget_devices``): one silent for good
        would stand for ever. The clears are queued for the disk in this same turn (``_alarms``
        queues before it awaits), so no state is saved that forgot an alarm whose clear is
        not queued before it."""
        keep = set(self.devices) | self.ingest.unreadable
        known = len(self.engine.state.devices)
        cleared = self.engine.forget_devices(keep, self.clock())
        forgotten = known - len(self.engine.state.devices)
        if forgotten:
            self.counters["devices_removed"] += forgotten
            log.info("edge: %d devices no longer listed or discovered are forgotten", forgotten)
        if forgotten or cleared:
            self._state_dirty = True
        if cleared:
            try:
                await self._alarms(cleared)
            except Exception:  # a disk that cannot commit: the gateway must run on
                self.counters["internal_errors"] += 1
                log.exception("edge: clears of devices taken out not stored")

    def _speakers(self) -> list[str]:
        """This part's speakers (a broadcast from the hub reaches every part)."""
        return [h.config.id for h in self.ingest.devices.values() if h.config.kind == "speaker"]

    def _building_speakers(self) -> list[str]:
        """Every speaker of the building, the other parts' too: what a local warning sounds
        on (their receipts come back through their own parts)."""
        return self._speakers() + self.ingest.speakers_elsewhere()

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            await self._settle_devices()  # before any reading: its clears go first
            await self._run_tasks()
        except* Retired:
            self.retired = True
        finally:
            await self._stopped()

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.local.run())
            if self.upstream is not self.local:
                tasks.create_task(self.upstream.run())
            tasks.create_task(self._uplink_loop())
            tasks.create_task(self._replay_loop())
            if self.part is None or self.part.speaks:
                tasks.create_task(self._heartbeat_loop())
            if self.part is not None:
                tasks.create_task(self._board_loop())
            if self.part is not None and self.part.retiring:
                tasks.create_task(self._retire_when_drained())
            tasks.create_task(self._housekeeping_loop())
            if self.telemetry is not None:
                tasks.create_task(self._telemetry_loop(self.telemetry))

    async def _stopped(self) -> None:
        if self.part is not None and self.part.board is not None:
            self._write_board()  # its last figures: a retired part's gauges at their end
        for task in self._local_warnings.values():
            task.cancel()
        try:
            # Shielded, so that a second cancellation does not drop it.
            if self._state_dirty:
                await asyncio.shield(self._save_state_soon())
        finally:  # and the telemetry is flushed even so
            if self.telemetry is not None:
                try:
                    await self._flush_telemetry(self.telemetry, everything=True)
                except Exception:  # a stop must not end with it (the state is saved)
                    self._telemetry_failed("the last flush")

    async def forget_sessions(self) -> bool:
        """End this agent's persistent MQTT sessions at the broker (a retired part's: the
        broker would otherwise queue its devices' readings for it for ever); False if a
        broker could not be reached."""
        ended = True
        for link in {self.local, self.upstream}:
            clean = MqttLink(link.broker, client_id=link.client_id, persistent=False)
            task = asyncio.create_task(clean.run())
            try:
                ended = await clean.wait_connected(10) and ended
            finally:
                await stop(task)
        return ended

    def close(self) -> None:
        self._disk.shutdown(wait=True)
        self._state_disk.shutdown(wait=True)
        self._save_state()
        self.outbox.close()
        self.snapshots.close()
        if self.telemetry is not None:
            self.telemetry.close()

    def stats(self) -> dict[str, float]:
        """Counters and gauges: for the heartbeat, /metrics and the telemetry. The part that
        speaks for the gateway adds the other parts' (edge/parts.py)."""
        own = self._own_stats()
        part = self.part
        if part is None or not part.speaks or part.board is None:
            return own
        return summed_stats(own, part.board.others(part.index), part.count, time.monotonic())

    def latency(self) -> Latency:
        """The rules' latency per reading, every part's (see stats)."""
        part = self.part
        if part is None or not part.speaks or part.board is None:
            return self.rule_latency
        others = part.board.others(part.index)
        return self.rule_latency.merged([(f.latency, f.latency_sum) for _, f in others])

    def alarm_latencies(self) -> tuple[Latency, Latency]:
        """``alarm_latency`` and ``alarm_disk``, every part's (see stats)."""
        part = self.part
        if part is None or not part.speaks or part.board is None:
            return self.alarm_latency, self.alarm_disk
        others = [figures for _, figures in part.board.others(part.index)]
        return (
            self.alarm_latency.merged([(f.alarm, f.alarm_sum) for f in others]),
            self.alarm_disk.merged([(f.alarm_disk, f.alarm_disk_sum) for f in others]),
        )

    async def _board_loop(self) -> None:
        """Every part leaves its figures on the board: for the part that speaks for the
        gateway, and for a part handing on a reading (_hand_on_loop)."""
        assert self.part is not None
        board = self.part.board
        written, connections = 0.0, -1
        while board is not None:
            # Every BOARD_EVERY_S, and at once when this part has (re)subscribed: a part
            # handing a reading on waits for that.
            if self.local.connections != connections or time.monotonic() - written >= BOARD_EVERY_S:
                connections, written = self.local.connections, time.monotonic()
                self._write_board()
            await asyncio.sleep(0.02)

    def _write_board(self) -> None:
        assert self.part is not None and self.part.board is not None
        figures = PartFigures(
            at=time.monotonic(),
            connections=self.local.connections,
            stats=self._own_stats(),
            latency=list(self.rule_latency.counts),
            latency_sum=self.rule_latency.sum,
            alarm=list(self.alarm_latency.counts),
            alarm_sum=self.alarm_latency.sum,
            alarm_disk=list(self.alarm_disk.counts),
            alarm_disk_sum=self.alarm_disk.sum,
        )
        if not self.part.board.leave(self.part.index, figures):
            self.counters["board_overflows"] += 1

    def _hand_on(self, message: Incoming) -> None:
        """Another part's reading or receipt, held for this part by its persistent session
        from a run with other parts (a change of ``parts``): published again, for the part
        that has the device now (this part no longer subscribes to its topic)."""
        if self.local.subscribed(message.topic):
            # Still ours at the broker (a device that moved away as this part heard it):
            # published again, it would come straight back here, for ever.
            self.counters["handed_on_refused"] += 1
            self._background(self.local.unsubscribe([message.topic]))
            return
        self._handing_left += 1
        self._handing.put_nowait(message)
        if self._hander is None or self._hander.done():
            self._hander = asyncio.create_task(self._hand_on_loop(self._handing))
            self._tasks.add(self._hander)
            self._hander.add_done_callback(self._tasks.discard)

    async def _hand_on_loop(self, queue: asyncio.Queue[Incoming]) -> None:
        assert self.part is not None
        subscribed: set[int] = set()  # the parts seen subscribed
        while True:
            message = await queue.get()
            try:
                await self._hand_on_one(message, subscribed)
            except Exception:  # one must not stop the rest
                self.counters["handed_on_failed"] += 1
                log.exception("edge: a message on %s for another part not handed on", message.topic)
            finally:
                self._handing_left -= 1

    async def _hand_on_one(self, message: Incoming, subscribed: set[int]) -> None:
        assert self.part is not None
        device = topics.parse(message.topic).device
        owner = self.ingest.owner(device) if device is not None else None
        if owner is not None and (index := part_of(owner, self.part.count)) not in subscribed:
            # Not before that part has subscribed: a new part's session does not exist at the
            # broker until then, and what is published before is not kept for it.
            deadline = time.monotonic() + HAND_ON_WAIT_S
            while time.monotonic() < deadline:
                assert self.part.board is not None
                figures = self.part.board.figures(index)
                if figures is not None and figures.connections > 0:
                    subscribed.add(index)
                    break
                await asyncio.sleep(0.02)
        try:
            # Written at once, acknowledged later: in order, and fast, so that they reach
            # their part before the device's next reading does (one behind it is refused).
            acked = self.local.publish_soon(message.topic, message.payload, qos=message.qos or 1)
        except NotConnected:
            self.counters["handed_on_failed"] += 1
            log.error("edge: a message on %s for another part not handed on", message.topic)
            return
        self.counters["handed_on"] += 1
        self._background(_logged(acked, f"a message on {message.topic} handed on, unacknowledged"))

    async def _retire_when_drained(self) -> None:
        """A part left from a run with more parts: its devices are with other parts now
        (their standing alarms cleared by run()'s settling, as for devices moved). Once its
        outbox (and telemetry buffer) is empty, it ends run()."""
        while True:
            await asyncio.sleep(1.0)
            buffered = 0 if self.telemetry is None else self.telemetry.buffer.depth()
            # Asked on the outbox's thread: behind every write queued before (a clear).
            depth = await self._io(self.outbox.depth)
            if depth == 0 and buffered == 0 and not self._unmarked and not self._handing_left:
                log.info("edge: part %s drained; it ends", self.data_dir)
                raise Retired

    def _own_stats(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.ingest.counters + self.counters)
        out["outbox_depth"] = self.outbox.depth()
        out["outbox_dropped"] = self.outbox.dropped
        oldest = self.outbox.oldest_ms()
        out["uplink_lag_s"] = 0.0 if oldest is None else max(0.0, _ms(self.clock()) - oldest) / 1000
        out["devices_online"] = sum(1 for d in self.ingest.devices.values() if d.state == "online")
        out["devices_offline"] = sum(
            1 for d in self.ingest.devices.values() if d.state == "offline"
        )
        out["uptime_s"] = time.monotonic() - self.started
        out["mqtt_reconnects"] = max(0, self.local.connections - 1)
        out["handler_errors"] = self.local.handler_errors
        # Rule and detector evaluations that raised (each skipped alone; the log names them).
        out["rule_failures"] = float(sum(self.engine.failures.values()))
        # Readings received and not yet handled: at its limit (5,000), reading pauses and the
        # broker holds the rest (sheds QoS 0 beyond its queue). Dropped here: TLS only.
        out["mqtt_inbox_waiting"] = self.local.waiting
        out["mqtt_inbox_dropped"] = self.local.inbox_dropped
        if self.telemetry is not None:
            out["telemetry_buffered_batches"] = self.telemetry.buffer.depth()
            out["telemetry_dropped_batches"] = self.telemetry.buffer.dropped_batches
            out["telemetry_expired_batches"] = self.telemetry.buffer.expired_batches
            # Elder-care windows withheld because too few devices reported (k-anonymity).
            out["telemetry_suppressed_windows"] = self.telemetry.downsampler.suppressed
            out["telemetry_buffer_errors"] = self.telemetry.writer.counters["buffer_errors"]
            out["telemetry_batches_lost"] = self.telemetry.writer.counters["batches_lost"]
        return out

    async def reload_rules(self, ruleset: RuleSet) -> int:
        """Run new rules without a restart: unchanged rules keep their state (hold timers,
        learned routines, open alerts); removed rules clear their alerts. Returns how many
        rules now run. In parts, rules a part cannot run whole (``parts_problems``, against
        the parts and devices running) are refused: ConfigError, and the old rules run on."""
        if self.part is not None:
            running = msgspec.structs.replace(self.config, rules=ruleset)
            for where, problem in parts_problems(running):
                raise ConfigError("the reloaded rules", None, where, problem)
        await self._alarms(self.engine.reload(ruleset, self.clock()))
        self.engine.load_detectors()  # a new rule's detector: now, not at an alarm's reading
        await self._settle_devices()  # an edit that moved devices out of a rule's scope
        self._state_dirty = True
        self.counters["rules_reloaded"] += 1
        self._observe("rules", f"reloaded: {len(self.engine.rules)} rules")
        return len(self.engine.rules)

    def _save_state(self) -> None:
        """Save the whole rule state now (at exit; the loop saves through ``_save_state_soon``)."""
        if self._state_dirty:
            blob = self.engine.snapshot(with_models=False)
            self._save_both(blob, self._stamp, self._new_models())
            self._state_dirty = False
            self._last_snapshot = time.monotonic()

    def _new_models(self) -> tuple[int, bytes] | None:
        """The models round to save with the state, if it is new (taken on the loop)."""
        round_ = self.engine.models_round
        if round_ == self._models_saved:
            return None
        return round_, self.engine.models_snapshot()

    def _save_both(self, blob: bytes, stamp: int, models: tuple[int, bytes] | None) -> None:
        """The models if new, then the state (on the state's thread, or at exit): a crash in
        between leaves new models beside the state before, which restores them over its own."""
        if models is not None:
            self.snapshots.save(ENGINE_MODELS, models[1], stamp)
            self._models_saved = models[0]
        self.snapshots.save(ENGINE_STATE, blob, stamp)

    async def _save_state_soon(self) -> None:
        # The changed devices are encoded a slice at a time, letting readings in between (the
        # whole state of 1,000 busy devices takes ~9 ms, an alarm's wait); the snapshot itself
        # is then taken at once, here on the loop, so it holds exactly the alert parts stamped
        # so far, and is stamped with the last of them.
        while True:  # a round of models that is due, a slice a turn (its list only shrinks)
            if not self.engine.pickle_models(MODELS_SLICE):
                break
            await asyncio.sleep(0)
        for _ in range(len(self.devices) // ENCODE_SLICE + 1):  # bounded: devices keep changing
            if not self.engine.encode_devices(ENCODE_SLICE):
                break
            await asyncio.sleep(0)
        blob, stamp = self.engine.snapshot(with_models=False), self._stamp
        models = self._new_models()
        self._state_dirty = False
        self._last_snapshot = time.monotonic()
        await self._save_snapshot(blob, stamp, models)

    async def _save_snapshot(
        self, blob: bytes, stamp: int, models: tuple[int, bytes] | None = None
    ) -> None:
        """Save after every outbox write queued so far: the events of the transitions the
        state holds are committed before it (else a crash between the two commits would
        restore an alarm as raised whose event was never stored, and it would never reach
        the hub). One thread for the outbox, in order: a no-op queued last is a barrier."""
        await self._io(_nothing)
        loop = asyncio.get_running_loop()
        save = functools.partial(self._save_both, blob, stamp, models)
        await loop.run_in_executor(self._state_disk, save)

    async def _io(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call`` on the outbox's own thread (see ``_disk``)."""
        return await self._queue_io(call, *args, **kwargs)

    def _queue_io(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``call`` queued on the outbox's thread now, in order with every write before it."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._disk, functools.partial(call, *args, **kwargs))

    async def _housekeeping_loop(self) -> None:
        """Once a second: save changed rule state, notice silent devices, apply outbox bounds.

        A round that fails (a full card refusing the outbox's prune) is counted and logged,
        and the next one runs a second later: before, it ended this task, and the agent with
        it, every time it came back up on that card."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._housekeeping_round()
            except Exception:
                failed = self.counters["housekeeping_errors"] = (
                    self.counters["housekeeping_errors"] + 1
                )
                if failed == 1 or failed % 600 == 0:  # not every second into a full journal
                    log.exception("edge: housekeeping failed (%d times); it runs on", failed)

    async def _housekeeping_round(self) -> None:
        bounds = self.config.outbox
        now = self.clock()
        # Timers and silence: rules that fire without a reading (a device gone quiet,
        # an inactivity window ending).
        await self._alarms(self.engine.tick(now))
        # Readings (an alarm among them) go between the parts of this round: at 10,000
        # devices the tick and the health pass below take several ms each.
        await asyncio.sleep(0)
        self._flush_dead_letters(now)
        self._state_dirty = True
        if time.monotonic() - self._last_snapshot >= STATE_SAVE_S:
            await self._save_state_soon()
        for index, health in enumerate(list(self.ingest.devices.values())):
            if index % HEALTH_SLICE == HEALTH_SLICE - 1:
                await asyncio.sleep(0)
            silent_for = self.config.silent_after * health.config.interval_s
            if (
                health.state == "online"
                and health.last_seen is not None
                and (now - health.last_seen).total_seconds() > silent_for
            ):
                # A device that stopped talking must never look like a safe reading.
                health.state = "offline"
                self.counters["devices_went_silent"] += 1
                self._observe("health", f"{health.config.id} silent for {silent_for:.0f}s")
        dropped = await self._io(
            self.outbox.prune,
            _ms(now),
            max_age_ms=int(bounds.max_age_days * 86_400_000),
            max_entries=bounds.max_entries,
        )
        if dropped:
            self.counters["outbox_dropped"] += dropped
            log.warning("outbox over its bounds: dropped %d non-life-safety entries", dropped)

    async def _telemetry_loop(self, telemetry: Telemetry) -> None:
        interval = self.config.telemetry.flush_s if self.config.telemetry else 5.0
        while True:
            await asyncio.sleep(interval)
            try:
                if self.part is None or self.part.speaks:  # the gateway's, every part's
                    telemetry.gateway_point(self.stats(), self.clock())
                await self._flush_telemetry(telemetry)
            except Exception:  # ended, the task would end the agent with it (its TaskGroup)
                self._telemetry_failed("a flush")

    async def _flush_telemetry(self, telemetry: Telemetry, *, everything: bool = False) -> None:
        """The points are taken and made line protocol on this loop (see Telemetry.encode);
        only the buffer's disk and InfluxDB's answer are waited for in a thread."""
        now = self.clock()
        taken = telemetry.take(now, everything)
        if everything:
            # The last flush, at shutdown: made at once, so that a second cancellation (a
            # stop repeats it) cannot leave it half made with no flush after it.
            body, count = telemetry.encode_now(taken)
        else:
            try:
                body, count = await telemetry.encode(taken)
            except asyncio.CancelledError:  # shutting down: the last flush writes them
                telemetry.give_back(taken)
                raise
        # Shielded: a cancellation must not drop the batch before a thread has taken it up.
        await asyncio.shield(asyncio.to_thread(telemetry.send, body, count, now))

    def _observe(self, what: str, detail: str) -> None:
        if self.observer is not None:
            self.observer(Observed(what, detail, self.clock()))

    # -- incoming ------------------------------------------------------------------------

    async def _on_message(self, message: Incoming) -> None:
        now = self.clock()
        try:
            if message.retain:  # rare: only what a broker replays at a (re)subscribe
                self._refuse_replay(message.topic)
            if message.topic == self._ack_topic:
                await self._on_ack(message.payload, now)
            elif message.topic == self._hub_online_topic:
                await self._on_hub_online()
            elif message.topic == self._broadcast_topic:
                await self._on_broadcast(message, now)
            else:
                await self._on_device(message, now)
        except WireError as exc:
            self.counters[f"rejected.{exc.reason}"] += 1
            self._dead_letter(
                Rejection(exc.reason, exc.detail, message.topic, message.payload), now
            )
        except Exception:
            # Never let one message stop the loop that carries every alarm.
            self.counters["internal_errors"] += 1
            log.exception("edge: failed to handle a message on %s", message.topic)

    def _refuse_replay(self, topic: str) -> None:
        """Raise ``WireError(RETAINED)`` for a retained reading, device receipt or broadcast.

        None of them is ever published retained (docs/wire.md), so one delivered retained is a
        broker's stored copy, replayed at every (re)subscribe: an SOS from days ago must not
        raise an alarm after a restart, nor an old warning be played again. A message that
        matches an established subscription always comes with retain=0 (MQTT). Statuses are
        retained by design and go on."""
        if topic == self._broadcast_topic:
            what = "broadcast"
        else:
            try:
                channel = topics.parse(topic).channel
            except WireError:
                return  # the normal path reports the topic
            if channel is Channel.READING:
                what = "reading"
            elif channel is Channel.DEVICE_RECEIPT:
                what = "receipt"
            else:
                return
        detail = (
            f"a retained {what} is a stale copy the broker replays at every subscribe "
            f"({what}s are never published retained); clear it with "
        )
        clear = f"mosquitto_pub -r -n -t '{topic}'"
        if len(detail) + len(clear) > DEADLETTER_DETAIL:  # a long topic: the letter has it
            clear = "mosquitto_pub -r -n -t <this letter's topic>"
        raise WireError(Reason.RETAINED, detail + clear)

    async def _on_device(self, message: Incoming, now: datetime) -> None:
        result = self.ingest.accept(message.topic, message.payload, now)
        if isinstance(result, Rejection):
            if result.report:
                self._dead_letter(result, now)
            return
        if result.hand_on:
            self._hand_on(message)
            return
        if result.dropped is not None:  # metrics left out, or a move refused; the rest counts
            self._dead_letter(result.dropped, now)
        if result.discovered is not None:
            self._take_in(result.discovered, now)
            if self.engine.unsettled:  # it moved: the alarms where it was
                await self._settle_devices()
        elif result.forgotten is not None:
            if self.part is not None:  # moved to another part's flat: its topics go too
                filters = [t for t, _ in self._device_subscriptions(result.forgotten)]
                self._background(self.local.unsubscribe(filters))
            self.devices.pop(result.forgotten, None)  # an unreadable one was never here
            log.info("edge: device %s forgotten (its announcement was cleared)", result.forgotten)
            self._observe("device", f"{result.forgotten} forgotten")
            # The entry goes first: after a crash in between, the next start forgets the
            # device and makes its clears again (its announcement is gone for good).
            dropped = self._queue_io(self.outbox.drop_state, DISCOVERED + result.forgotten)
            self._background(_logged(dropped, f"device {result.forgotten} not forgotten on disk"))
            await self._settle_devices()
        # Most readings change nothing: judged without a coroutine of their own.
        outside = result.outside
        for index, reading in enumerate(result.readings):
            transitions = self._judge(reading, now, outside[index] if outside else None)
            if transitions or self._sirens:
                await self._act(reading, transitions, now, message.at)
        if result.receipt is not None:
            await self._forward_receipt(result.receipt)

    # -- deciding and acting --------------------------------------------------------------

    async def _evaluate(self, reading: Reading, now: datetime) -> None:
        """One reading: judged, and acted on."""
        await self._act(reading, self._judge(reading, now), now)

    def _judge(
        self, reading: Reading, now: datetime, outside: dict[str, float] | None = None
    ) -> list[Transition]:
        """``outside``: its values left out as outside their physical range (Engine.feed)."""
        info = self.devices[reading.device]
        # The rules' time is the gateway's clock at arrival: device clocks cannot be trusted
        # to hold an alarm back or bring it forward.
        started = time.perf_counter()
        transitions = self.engine.feed(info, reading, now, outside)
        self.rule_latency.observe(time.perf_counter() - started)
        self._state_dirty = True
        if self.telemetry is not None:
            # After the rules, and on its own: the dashboards' series must never cost an alarm.
            try:
                self._telemetry_of(self.telemetry, reading, now)
            except Exception:
                self._telemetry_failed("a reading's series")
        return transitions

    def _telemetry_of(self, telemetry: Telemetry, reading: Reading, now: datetime) -> None:
        config = self.ingest.devices[reading.device].config
        telemetry.reading(config, self.config.building, reading, now)
        if config.kind not in PRIVATE_KINDS:
            track = self.engine.state.devices.get(reading.device)
            if track is not None and track.scores:
                telemetry.scores(config, self.config.building, track.scores, now)

    def _telemetry_failed(self, what: str) -> None:
        failed = self.counters["telemetry_errors"] = self.counters["telemetry_errors"] + 1
        # Each kind logged once, then every 10,000th: not once a reading into a full journal,
        # nor a failing flush hidden behind readings' failures.
        seen = self._telemetry_seen[what] = self._telemetry_seen[what] + 1
        if seen == 1 or seen % 10_000 == 0:
            log.exception("edge: telemetry failed on %s (%d times); the rest runs on", what, failed)

    async def _act(
        self,
        reading: Reading,
        transitions: list[Transition],
        now: datetime,
        arrived: float | None = None,
    ) -> None:
        """``arrived``: when the reading was read off the socket (``Incoming.at``)."""
        if transitions:
            await self._alarms(transitions, arrived)
        elif reading.device in self._sirens.values():
            self._reassert_siren(reading.device, now)

    def _reassert_siren(self, device: str, now: datetime) -> None:
        """While an alarm stands, a siren the device does not report as on is commanded again:
        one lost command must not leave a leak silent."""
        actuators = self.ingest.devices[device].actuators
        # Only a device that reports its siren can be seen not to sound it.
        if "siren" not in actuators or actuators["siren"] == "on":
            return
        last = self._siren_sent.get(device)
        if last is not None and _within(now, last, SIREN_RETRY_S):
            return
        self._siren_sent[device] = now
        self.counters["commands.reasserted"] += 1
        self._background(self._commanded(self._command_now(device, "siren_on"), device, "siren_on"))

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        # Commands wait for the broker's PUBACK; the message loop must not wait with them.
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _alarms(self, transitions: list[Transition], arrived: float | None = None) -> None:
        """Act on the transitions the rules just made. Each one's commands go out and its event
        is queued for the disk with its rule's part at once, before any of them is awaited: a
        state saved meanwhile then holds no transition whose event is not queued before it
        (see _save_snapshot)."""
        started = [self._start_alarm(transition) for transition in transitions]
        failed: Exception | None = None
        for alarm in started:
            try:
                await self._finish_alarm(*alarm, arrived=arrived)
            except Exception as exc:  # the next ones are stored: they still go out
                failed = failed or exc
        if failed is not None:
            raise failed

    def _start_alarm(
        self, transition: Transition
    ) -> tuple[Transition, AlertEvent, bytes, asyncio.Future[bool], int, float]:
        device = transition.device
        event = AlertEvent(
            id=uuid7(_ms(transition.at)),
            key=transition.alert_key,
            phase=transition.phase,
            severity=transition.severity,
            kind=transition.kind,
            rule=transition.rule,
            site=self.config.site,
            gateway=self.config.gateway,
            device=device,
            building=transition.building or self.config.building,
            unit=transition.unit,
            ts=transition.at,
            evidence=transition.evidence,
            message=transition.message,
            actions=sorted({a.do for a in transition.actions}),
            life_safety=transition.life_safety,
        )
        self.counters[f"alerts.{event.phase}"] += 1
        self._observe("alert", f"{event.phase} {event.severity} {event.kind}: {event.message}")
        # Life safety first: the local actions go out before anything else is done ...
        for target, action in self._commands_for(transition, event.key):
            acked = self._command_now(target, action, cause=event.id)
            self._background(self._commanded(acked, target, action))
        # ... then the event is made durable with the rule state that caused it (in a worker
        # thread, so the commands leave on this loop while the disk syncs), and only then
        # sent to the hub (_finish_alarm).
        payload = self.codec.encode(event)
        stored = self._queue_io(
            self._store_alert,
            event.id,
            self._alert_topic,
            payload,
            life_safety=transition.life_safety,
            now_ms=_ms(transition.at),
            state=self._alert_part(transition.rule),
            key=event.key,
            unmarked=dict(self._unmarked),
        )
        return transition, event, payload, stored, self._outbox_reads, time.monotonic()

    async def _finish_alarm(
        self,
        transition: Transition,
        event: AlertEvent,
        payload: bytes,
        stored: asyncio.Future[bool],
        reads: int,
        queued: float,
        *,
        arrived: float | None = None,
    ) -> None:
        """``queued``: when its commit was queued; ``arrived``: when its reading was read."""
        # Shielded: a shutdown that cancels this task must not cancel the commit queued.
        alone = await asyncio.shield(stored)
        disk_s = time.monotonic() - queued
        # Sent from here when nothing waits before it and no uplink pass has read the outbox
        # since it was stored (that pass would send it too); else the uplink sends it.
        unseen = alone and reads == self._outbox_reads
        if not (
            unseen and await self._send_at_once(event.id, event.key, self._alert_topic, payload)
        ):
            self._kick.set()
        elif arrived:  # 0.0: an Incoming made by hand, not read off a socket
            self.alarm_latency.observe(time.monotonic() - arrived)
            self.alarm_disk.observe(disk_s)
        self._plan_local_warning(event, transition)
        if self.telemetry is not None:
            try:  # the dashboards' point must not cost the alarm its local warning
                self.telemetry.alert(event)
            except Exception:
                self._telemetry_failed("an alert's point")

    def _store_alert(
        self,
        id: str,
        topic: str,
        payload: bytes,
        *,
        key: str | None,
        unmarked: Mapping[str, str | None],
        **kwargs: Any,
    ) -> bool:
        """Commit a new alert (on the outbox's thread); True if it is the only one waiting to
        be sent and no earlier event of its alarm waits for the hub's ack: it may go at once.
        ``unmarked``: alerts published and not yet marked sent (as they were on the loop)."""
        self.outbox.add(id, topic, payload, key=key, **kwargs)
        return self.outbox.alone(id, key, sent=unmarked)

    async def _send_at_once(self, id: str, key: str | None, topic: str, payload: bytes) -> bool:
        """Publish a new alert from the alarm's own task (see _store_alert), sparing the uplink
        task's wake and its trip to the outbox's thread; False leaves it to the uplink."""
        if not self.upstream.connected.is_set():
            return False
        try:
            acked = self.upstream.publish_soon(topic, payload, qos=1)
        except NotConnected:
            return False
        # Until it is marked sent, the uplink passes it over (and holds newer events of its
        # alarm, as for one sent and not acknowledged), and _store_alert does not count it as
        # waiting. A pass that read the outbox before the mark resumes before this task does
        # (one outbox thread, callbacks in order), so it still finds it here.
        self._unmarked[id] = key
        self._background(self._sent_at_once(id, acked))
        return True

    async def _sent_at_once(self, id: str, acked: Awaitable[None]) -> None:
        try:
            await acked
            self._observe("uplink", f"alert {id} -> hub")
            self.counters["uplink.sent"] += 1
            self.counters["uplink.at_once"] += 1
            await self._io(self.outbox.mark_sent, [id], _ms(self.clock()))
        except NotConnected:
            self._kick.set()  # not marked sent: the uplink sends it again
        finally:
            key = self._unmarked.pop(id, None)
            if key is not None and key in self._held:
                # A pass held a newer event of its alarm behind it meanwhile; if the hub's ack
                # came before this mark, nothing else would kick for that event.
                self._kick.set()

    def _alert_part(self, rule: str) -> tuple[str, int, bytes]:
        """One rule's alert tracks as they stand, stamped, saved with the alert they raised
        (see ENGINE_ALERTS)."""
        self._stamp += 1
        blob = msgspec.msgpack.encode(self.engine.state.alerts.get(rule, {}))
        return ENGINE_ALERTS + rule, self._stamp, blob

    def _commands_for(self, transition: Transition, key: str) -> list[tuple[str, CommandAction]]:
        """The rule's local actions as device commands; the siren stops when the alert clears."""
        if transition.phase is Phase.CLEARED:
            device = self._sirens.pop(key, None)
            return [] if device is None else [(device, "siren_off")]
        device = transition.device
        out: list[tuple[str, CommandAction]] = []
        for action in transition.actions:
            if device is None:
                break
            if action.do == "siren":
                out.append((device, "siren_on"))
                self._sirens[key] = device
                self._siren_sent[device] = transition.at
            elif action.do == "valve_close":
                out.append((device, "valve_close"))
        return out

    def _plan_local_warning(self, event: AlertEvent, transition: Transition) -> None:
        """If the hub does not answer an Extreme life-safety alarm in time, or the rule asks
        for the speakers, warn the building ourselves."""
        speaker = next((a for a in transition.actions if a.do == "speaker"), None)
        if speaker is not None:
            self.counters["local_announcements"] += 1
            warning = local_warning(event, self.clock(), speaker.text)
            self._background(self._play(warning, self._building_speakers()))
        if event.phase is Phase.CLEARED:
            pending = self._local_warnings.pop(event.key, None)
            if pending is not None:
                pending.cancel()
            return
        if (
            event.severity is not Severity.EXTREME
            or not transition.life_safety
            or event.key in self._local_warnings
        ):
            return
        self._local_warnings[event.key] = asyncio.create_task(self._warn_if_unanswered(event))

    async def _warn_if_unanswered(self, event: AlertEvent) -> None:
        await asyncio.sleep(self.config.local_warning_after_s)
        hub_acked = not await self._io(self.outbox.holds, event.id)
        if hub_acked and event.id in self._hub_broadcast_causes:
            return
        if hub_acked and self.upstream.connected.is_set():
            return  # the hub has it and decides about broadcasting
        self.counters["local_warnings"] += 1
        warning = local_warning(event, self.clock())
        self._observe("broadcast", f"local warning (hub unreachable): {warning.headline}")
        await self._play(warning, self._building_speakers())

    async def _command(
        self,
        device: str,
        action: CommandAction,
        *,
        cause: str | None = None,
        broadcast: Broadcast | None = None,
    ) -> bool:
        return await self._commanded(
            self._command_now(device, action, cause=cause, broadcast=broadcast), device, action
        )

    def _command_now(
        self,
        device: str,
        action: CommandAction,
        *,
        cause: str | None = None,
        broadcast: Broadcast | None = None,
    ) -> Awaitable[None]:
        """The command written to the broker's socket before this returns (a siren must not
        wait for a task of its own to start: a turn of the loop behind the readings queued);
        what is returned waits for the broker's ack."""
        now = self.clock()
        command = Command(
            id=uuid7(_ms(now)),
            device=device,
            action=action,
            ts=now,
            cause=cause,
            broadcast=broadcast,
        )
        topic = topics.command(self.config.site, self.config.gateway, device)
        try:
            return self.local.publish_soon(topic, self.codec.encode(command), qos=1, timeout=5)
        except NotConnected as exc:
            return _failed(exc)

    async def _commanded(self, acked: Awaitable[None], device: str, action: CommandAction) -> bool:
        try:
            await acked
        except NotConnected as exc:
            self.counters["commands.failed"] += 1
            log.error("edge: command %s to %s failed: %s", action, device, exc)
            return False
        self.counters[f"commands.{action}"] += 1
        self._observe("command", f"{action} -> {device}")
        return True

    # -- hub link --------------------------------------------------------------------------

    async def _on_upstream_connect(self) -> None:
        await self._io(self.outbox.reset_backoff)
        self._kick.set()
        self._replay_kick.set()
        if self.part is None or self.part.speaks:
            await self._publish_heartbeat()

    async def _uplink_loop(self) -> None:
        """New alerts: each goes to the hub as soon as it is durable, in the order raised."""
        while True:
            await self.upstream.connected.wait()
            self._kick.clear()  # before reading the outbox, so no wake-up is lost
            try:
                await self._send_new()
            except Exception:
                # A disk or encoding fault must not end the uplink; it is tried again.
                self.counters["uplink.errors"] += 1
                log.exception("edge: uplink pass failed")
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that races
            # the kick, and the loop would then outlive its agent (bus.tasks).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._kick.wait()

    async def _send_new(self) -> None:
        now_ms = _ms(self.clock())
        self._outbox_reads += 1
        # One trip to the outbox's thread for both: each trip back waits its turn on the loop.
        unmarked = {key for key in self._unmarked.values() if key is not None}
        fresh, replaying = await self._io(self._fresh_and_replaying, now_ms, unmarked)
        fresh = [e for e in fresh if e.id not in self._unmarked]  # sent by their alarm
        if not fresh:
            self._held = set()
            return
        # One alarm's events reach the hub in their order: a new one waits while an older one
        # of the same alarm is being replayed (which is then replayed at once), and goes on
        # its ack. Other alarms' new events do not wait.
        before = replaying | unmarked
        waiting = {e.key for e in fresh if e.key in before and e.key is not None}
        self._held = waiting
        # Held for an alert published and not marked as the pass began, whose mark (and ack)
        # came while it read: no ack will kick for it, so the uplink passes again now.
        if waiting - replaying - {key for key in self._unmarked.values() if key is not None}:
            self._kick.set()
        if waiting:
            self.counters["uplink.held_for_order"] += 1
            await self._io(self.outbox.expedite, waiting)
            self._replay_kick.set()
        sent: list[str] = []
        try:
            for index, entry in enumerate(e for e in fresh if e.key not in waiting):
                if index >= UPLINK_BURST:  # a storm of alerts goes out at a bounded rate
                    await asyncio.sleep(0.01)
                try:
                    await self.upstream.publish(entry.topic, entry.payload, qos=1)
                except NotConnected:
                    return
                sent.append(entry.id)
                self._observe("uplink", f"alert {entry.id} -> hub")
        finally:
            if sent:
                await self._io(self.outbox.mark_sent, sent, now_ms)
                self.counters["uplink.sent"] += len(sent)

    def _fresh_and_replaying(self, now_ms: int, unmarked: set[str]) -> tuple[list[Entry], set[str]]:
        fresh = self.outbox.due(now_ms, 0, UPLINK_BATCH, sent=False)
        if not fresh:
            return fresh, set()
        replaying = self.outbox.replaying()
        if len(fresh) >= UPLINK_BATCH and (replaying or unmarked):
            # A full batch may be all held alarms' entries, with others' behind them (an
            # alarm flapping while the hub is away): those are read too.
            seen = {e.id for e in fresh}
            more = self.outbox.due(
                now_ms, 0, UPLINK_BATCH, sent=False, excluding=replaying | unmarked
            )
            fresh = sorted([*fresh, *(e for e in more if e.id not in seen)], key=lambda e: e.seq)
        return fresh, replaying

    async def _replay_loop(self) -> None:
        """Alerts the hub has not acknowledged in time go again with a doubling backoff, one by
        one, each after the previous one's ack: a hub that was just coming up then stores them
        in the order they were raised. This runs beside the new alerts' loop, so a replay
        waiting for its ack never holds a new alarm back."""
        retry_ms = int(self.config.uplink_retry_s * 1000)
        max_ms = int(self.config.uplink_retry_max_s * 1000)
        while True:
            await self.upstream.connected.wait()
            self._replay_kick.clear()
            try:
                await self._replay_due(retry_ms, max_ms)
            except Exception:
                self.counters["uplink.errors"] += 1
                log.exception("edge: uplink replay failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, retry_ms / 2000)):
                    await self._replay_kick.wait()

    async def _replay_due(self, retry_ms: int, max_ms: int) -> None:
        now_ms = _ms(self.clock())
        if now_ms < self._last_replay_ms:
            # The clock was set back: every backoff would otherwise wait out the jump too.
            await self._io(self.outbox.reset_backoff)
        self._last_replay_ms = now_ms
        due = await self._io(self.outbox.due, now_ms, retry_ms, UPLINK_BATCH, max_ms, sent=True)
        for entry in due:
            # Waiting for the ack starts before the publish: the ack may come back first.
            waiter = asyncio.get_running_loop().create_future()
            self._ack_waiters[entry.id] = waiter
            try:
                try:
                    await self.upstream.publish(entry.topic, entry.payload, qos=1)
                except NotConnected:
                    return
                await self._io(self.outbox.mark_sent, entry.id, now_ms)
                self.counters["uplink.sent"] += 1
                self.counters["uplink.resent"] += 1
                self._observe("uplink", f"alert {entry.id} -> hub (attempt {entry.attempts + 1})")
                if not await _acked(waiter, retry_ms / 1000):
                    return
            finally:
                self._ack_waiters.pop(entry.id, None)

    async def _on_hub_online(self) -> None:
        # A hub (re)started: whatever waits in the outbox goes now, not at its next backoff.
        await self._io(self.outbox.reset_backoff)
        self.counters["hub_online_seen"] += 1
        self._replay_kick.set()

    async def _on_ack(self, payload: bytes, now: datetime) -> None:
        # Control messages skip the timestamp window: a gateway clock that drifted must not
        # stop the outbox from draining.
        ack = self.codec.decode(payload, Ack, now, check_time=False)
        ids = list(ack.ids)
        # What follows the removal waits in a task, not here: the readings behind an ack
        # would wait a trip to the disk's thread (~0.2 ms) each time the hub acknowledges.
        self._background(self._acked(ids, self._queue_io(self.outbox.remove, ids)))

    async def _acked(self, ids: list[str], removal: Awaitable[list[str | None]]) -> None:
        try:  # a task of its own: nothing above it would catch and count a fault
            self._after_ack(ids, await removal)
        except Exception:
            self.counters["uplink.errors"] += 1
            log.exception("edge: handling the hub's ack of %s failed", ", ".join(ids))

    def _after_ack(self, ids: list[str], removed: list[str | None]) -> None:
        for event_id in ids:
            waiter = self._ack_waiters.get(event_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.counters["uplink.acked"] += len(removed)
        if removed:
            if not self._held.isdisjoint(removed):
                # A new event held behind one of these may go now. Only then: a pass that
                # reads the outbox while an alarm commits sends it in place of the alarm's
                # own task (_finish_alarm), a wake-up and a trip to the disk's thread later.
                self._kick.set()
            self._observe("ack", f"hub stored {', '.join(ids)}")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self._publish_heartbeat()
            except NotConnected:
                pass
            except Exception:
                self.counters["heartbeat.errors"] += 1
                log.exception("edge: heartbeat failed")

    async def _publish_heartbeat(self) -> None:
        stats = self.stats()  # every part's, in parts
        beat = Heartbeat(
            site=self.config.site,
            gateway=self.config.gateway,
            state="online",
            ts=self.clock(),
            uptime_s=time.monotonic() - self.started,
            outbox_depth=int(stats["outbox_depth"]),
            devices_online=int(stats["devices_online"]),
            counters={k: int(v) for k, v in stats.items()},
        )
        topic = topics.gateway_topic(Channel.HEARTBEAT, self.config.site, self.config.gateway)
        await self.upstream.publish(topic, self.codec.encode(beat), qos=0, retain=True)

    # -- broadcasts and receipts ------------------------------------------------------------

    async def _on_broadcast(self, message: Incoming, now: datetime) -> None:
        broadcast = self.codec.decode(message.payload, Broadcast, now, check_time=False)
        if broadcast.site != self.config.site:
            # Never played here: a hub (or anyone) publishing another site's warning on this
            # site's topic would sound it in the wrong buildings.
            raise WireError(
                Reason.SITE_MISMATCH,
                f"payload names site {broadcast.site!r}, but it came on the broadcast topic "
                f"of site {self.config.site!r}",
            )
        if broadcast.buildings and self.config.building not in broadcast.buildings:
            return
        speakers = self._speakers()
        played = self._broadcasts_seen.get(broadcast.id)
        if played is not None:
            # A QoS 1 duplicate, or the hub retrying speakers it has no receipt from.
            speakers = [s for s in speakers if s not in played]
            if not speakers:
                return
        if broadcast.msg_type in ("Update", "Cancel"):
            # Remembered, so that a warning it replaces, redelivered late (a gateway or speaker
            # back from an outage), is never played after its Cancel.
            self._cancelled.update(cap.referenced(broadcast))
            while len(self._cancelled) > 1000:
                self._cancelled.pop()
        elif cap.identifiers(broadcast) & self._cancelled:
            self.counters["broadcasts.cancelled"] += 1
            return
        if broadcast.expires is not None and broadcast.expires < now:
            self.counters["broadcasts.expired"] += 1
            return
        if broadcast.cause is not None:
            self._hub_broadcast_causes[broadcast.cause] = None
            while len(self._hub_broadcast_causes) > 1000:  # a gateway runs for months
                del self._hub_broadcast_causes[next(iter(self._hub_broadcast_causes))]
        self.counters["broadcasts" if played is None else "broadcasts.retried"] += 1
        self._observe("broadcast", f"{broadcast.severity}: {broadcast.headline}")
        # Awaited, not in the background: the broker hears that we have the warning (the
        # link acknowledges after this handler) only once every speaker's command is with
        # it, so a gateway killed in between gets the warning again when it restarts.
        await self._play(broadcast, speakers)

    async def _play(self, broadcast: Broadcast, speakers: list[str] | None = None) -> None:
        if speakers is None:
            speakers = self._speakers()
        results = await asyncio.gather(
            *(
                self._command(s, "play", cause=broadcast.cause, broadcast=broadcast)
                for s in speakers
            )
        )
        # Remembered only once every speaker was told: a redelivery then retries the rest.
        if all(results):
            self._broadcasts_seen.setdefault(broadcast.id, set())
            while len(self._broadcasts_seen) > 1000:
                self._broadcasts_seen.popitem(last=False)

    async def _forward_receipt(self, receipt: Receipt) -> None:
        if receipt.outcome == "played" and receipt.broadcast_id in self._broadcasts_seen:
            self._broadcasts_seen[receipt.broadcast_id].add(receipt.speaker)
        stamped = msgspec.structs.replace(
            receipt,
            site=self.config.site,
            gateway=self.config.gateway,
            building=self.config.building,
        )
        topic = topics.gateway_topic(Channel.RECEIPT, self.config.site, self.config.gateway)
        try:
            await self.upstream.publish(topic, self.codec.encode(stamped), qos=1)
        except NotConnected:
            self.counters["receipts.unsent"] += 1
            return
        self._observe("receipt", f"{receipt.speaker} {receipt.outcome} {receipt.broadcast_id}")

    def _dead_letter(self, rejection: Rejection, now: datetime) -> None:
        key = (rejection.topic, rejection.reason.value)
        last = self._letters_sent.get(key)
        if last is not None and _within(now, last, DEADLETTER_EVERY_S):
            withheld, _ = self._letters_withheld.get(key, (0, rejection))
            self._letters_withheld[key] = (withheld + 1, rejection)
            self.counters["deadletters.withheld"] += 1
            return
        withheld, _ = self._letters_withheld.pop(key, (0, rejection))
        self._send_dead_letter(key, rejection, now, withheld)

    def _flush_dead_letters(self, now: datetime) -> None:
        """The withheld letters whose interval is over, as one letter each (housekeeping)."""
        for key, (withheld, rejection) in list(self._letters_withheld.items()):
            last = self._letters_sent.get(key)
            if last is None or not _within(now, last, DEADLETTER_EVERY_S):
                del self._letters_withheld[key]
                self._send_dead_letter(key, rejection, now, withheld - 1)

    def _send_dead_letter(
        self, key: tuple[str, str], rejection: Rejection, now: datetime, repeats: int
    ) -> None:
        self._letters_sent[key] = now
        self._letters_sent.move_to_end(key)
        while len(self._letters_sent) > DEADLETTER_KEYS:
            forgotten, _ = self._letters_sent.popitem(last=False)
            held = self._letters_withheld.pop(forgotten, None)
            if held is not None:
                # Sent early rather than lost: junk on ever new topics pushing a key out must
                # not hide how often a device went wrong (the hub counts 1 + repeats).
                withheld, latest = held
                self._publish_dead_letter(latest, now, withheld - 1)
        self._publish_dead_letter(rejection, now, repeats)

    def _publish_dead_letter(self, rejection: Rejection, now: datetime, repeats: int) -> None:
        letter = DeadLetter(
            site=self.config.site,
            gateway=self.config.gateway,
            topic=rejection.topic[:1024],
            reason=rejection.reason.value,
            detail=rejection.detail[:DEADLETTER_DETAIL],
            ts=now,
            size=len(rejection.payload),
            excerpt=rejection.payload[:120].decode("utf-8", errors="replace"),
            repeats=repeats,
        )
        self.counters["deadletters"] += 1
        self._observe("deadletter", f"{rejection.reason}: {rejection.detail[:80]}")
        topic = topics.gateway_topic(Channel.DEADLETTER, self.config.site, self.config.gateway)
        # QoS 0 and not awaited: a diagnosis, not an alarm (the counters are exact anyway).
        with contextlib.suppress(NotConnected):
            self.upstream.publish_nowait(topic, self.codec.encode(letter))


async def _logged(stored: Awaitable[None], what: str) -> None:
    try:
        await stored
    except Exception:
        log.exception("edge: %s", what)


async def _failed(exc: NotConnected) -> None:
    raise exc


async def _acked(waiter: asyncio.Future[None], timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(waiter)
    except TimeoutError:
        return False
    return True


def _nothing() -> None:
    pass


def with_alert_parts(saved: bytes | None, parts: dict[str, bytes]) -> bytes:
    """The full snapshot ``saved`` (or an empty one) with the newer per-rule alert tracks in
    ``parts`` put in, as one snapshot for ``Engine.restore`` (which then applies its rules
    about edited and removed rules to them as well)."""
    if not parts:
        return saved or b""
    try:
        state = msgspec.msgpack.decode(saved, type=EngineState) if saved else EngineState()
        for name, blob in parts.items():
            rule = name.removeprefix(ENGINE_ALERTS)
            state.alerts[rule] = msgspec.msgpack.decode(blob, type=dict[str, AlertTrack])
    except msgspec.DecodeError as exc:
        raise EngineError(f"not an engine snapshot: {exc}") from exc
    return msgspec.msgpack.encode(state)
