"""The whole system as separate processes, for the fault suite.

Hub processes (``python -m hub``) on a shared subscription and one PostgreSQL; one edge agent
process per gateway (``python -m anmin edge run --config``); the simulator in its own process
(``python -m tests.faults.simulate``); a real Mosquitto, and optionally a real influxd. The
test process keeps only observers: the SMTP and webhook receivers, and an MQTT watcher that
records every command sent to a speaker and every gateway heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
import yaml

from bus import Broker, Incoming, MqttLink
from bus.tasks import stop
from firmware_sim import community
from firmware_sim.community import Community
from firmware_sim.scenario import load_scenario
from hub.store import Store
from tests.conftest import wait_for
from tests.faults.checker import Evidence, Notified, Result, Run, check
from tests.integration.hub.multihub import HubProcess
from tests.integration.hub.receivers import SmtpSink, WebhookReceiver
from tests.integration.hub.support import add_person
from wire import Codec, Command, Heartbeat, Receipt, topics
from wire.topics import Channel

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).parent / "scenarios" / "life-safety.yaml"
COMMITTEE = "committee@anmin.test"
STAFF = "staff@anmin.test"

POLICY = """\
version: 1
delivery: {{retries: 5, retry_after_s: 1}}
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, sender: hub@anmin.test}}
  ops: {{type: webhook, url: "{webhook_url}"}}
routes:
  - name: everything
    tiers:
      - {{after_minutes: 0, roles: [committee], channels: [email, ops]}}
{escalation}"""
# A second tier, for the scenario where escalation timers must survive a hub's death.
ESCALATION = "      - {after_minutes: 0.25, roles: [staff], channels: [email]}\n"

codec = Codec()


class Process:
    """A child process with its output in a log file; SIGKILL, SIGTERM, start again."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts}: {' '.join(self.command)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last words but the broker's last will."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)
        self._close_log()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s. The exit code (None if it had to be killed)."""
        code: int | None = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                code = self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        elif self.process is not None:
            code = self.process.returncode
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Gateway:
    site: str
    gateway: str
    building: str
    devices: list[str]
    config_path: Path
    process: Process


@dataclass
class Watcher:
    """Records what the speakers played and the gateways' heartbeats, as MQTT sees them.

    A play is a distinct ``played`` receipt from the speaker itself: a speaker asked again for
    a broadcast it has played answers with the same receipt (it is idempotent on the id, as
    every receiver must be), one that plays it again sends a new one. Play commands are
    counted too, for the record.
    """

    broker: Broker
    gateways: list[tuple[str, str]]
    played: set[tuple[str, str, datetime]] = field(default_factory=set)
    commands: list[tuple[str, str]] = field(default_factory=list)
    # gateway -> (when it arrived here, the heartbeat): arrival, since a skewed gateway's
    # own timestamps say nothing about when it was alive.
    heartbeats: dict[str, tuple[datetime, Heartbeat]] = field(default_factory=dict)
    link: MqttLink | None = None

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = []
        for site, gateway in self.gateways:
            subs.append((topics.device_channel_filter(site, gateway, Channel.CMD), 1))
            subs.append((topics.device_channel_filter(site, gateway, Channel.DEVICE_RECEIPT), 1))
            subs.append((topics.gateway_topic(Channel.HEARTBEAT, site, gateway), 1))
        return subs

    async def on_message(self, message: Incoming) -> None:
        now = datetime.now(UTC)
        topic = topics.parse(message.topic)
        if topic.channel is Channel.CMD:
            command = codec.decode(message.payload, Command, now, check_time=False)
            if command.action == "play" and command.broadcast is not None:
                self.commands.append((command.device, command.broadcast.id))
        elif topic.channel is Channel.DEVICE_RECEIPT:
            receipt = codec.decode(message.payload, Receipt, now, check_time=False)
            if receipt.outcome == "played":
                self.played.add((receipt.speaker, receipt.broadcast_id, receipt.ts))
        elif topic.channel is Channel.HEARTBEAT and message.payload:
            beat = codec.decode(message.payload, Heartbeat, now, check_time=False)
            self.heartbeats[beat.gateway] = (now, beat)


class FaultSystem:
    """Builds, runs and checks one scenario with the whole system in separate processes."""

    def __init__(
        self,
        name: str,
        tmp_path: Path,
        broker: Broker,
        database_url: str,
        smtp: SmtpSink,
        webhook: WebhookReceiver,
        *,
        scenario: Path = SCENARIO,
        speed: float = 40.0,
        escalation: bool = False,
        uplinks: dict[str, Broker] | None = None,
        edge_extra: Callable[[str], str] = lambda gateway: "",
        edge_env: Callable[[str], dict[str, str]] = lambda gateway: {},
        rules: tuple[str, ...] = ("gas", "elder-care"),
        sim_duration_s: float | None = None,
    ) -> None:
        self.name = name
        self.tmp = tmp_path
        self.broker = broker
        self.database_url = database_url
        self.smtp = smtp
        self.webhook = webhook
        self.scenario = scenario
        self.speed = speed
        self.rules = rules
        self.community: Community = community.build(load_scenario(scenario))
        self.store = Store(database_url)
        self.store.create_schema()
        add_person(self.store, "committee", "committee", email=COMMITTEE)
        self.notified = Notified(email=(COMMITTEE,), webhook=("committee",))
        escalation_text = ""
        if escalation:
            add_person(self.store, "staff", "staff", email=STAFF)
            self.notified = Notified(email=(COMMITTEE, STAFF), webhook=("committee",))
            escalation_text = ESCALATION
        self.policy = tmp_path / "routing.yaml"
        self.policy.write_text(
            POLICY.format(smtp_port=smtp.port, webhook_url=webhook.url, escalation=escalation_text)
        )
        self.hubs: list[HubProcess] = []
        self.gateways: dict[str, Gateway] = {}
        for (site, gateway), ids in self.community.gateways().items():
            infos = [self.community.info[d] for d in ids]
            path = tmp_path / f"{gateway}.yaml"
            uplink = (uplinks or {}).get(gateway)
            path.write_text(
                self._edge_yaml(site, gateway, infos[0].building, ids, uplink) + edge_extra(gateway)
            )
            env = {**os.environ, **edge_env(gateway)}
            command = [sys.executable, "-m", "anmin", "edge", "run", "--config", str(path)]
            process = Process(gateway, command, tmp_path / f"{gateway}.log", env)
            self.gateways[gateway] = Gateway(
                site, gateway, infos[0].building, list(ids), path, process
            )
        self.speakers: dict[str, list[str]] = {}
        for speaker in self.community.speakers:
            info = self.community.info[speaker.device_id]
            self.speakers.setdefault(info.building, []).append(speaker.device_id)
        self.truth_path = tmp_path / "truth.json"
        sim_command = [
            sys.executable, "-m", "tests.faults.simulate", str(scenario),
            "--speed", str(speed), "--broker-host", broker.host,
            "--broker-port", str(broker.port), "--truth", str(self.truth_path),
            "--counters", str(tmp_path / "sim-counters.json"),
        ]  # fmt: skip
        if sim_duration_s is not None:
            sim_command += ["--duration", str(sim_duration_s)]
        self._sim_command = sim_command
        self.sim = Process(
            "sim",
            sim_command,
            tmp_path / "sim.log",
            dict(os.environ),
        )
        self.watcher = Watcher(broker, [(g.site, g.gateway) for g in self.gateways.values()])
        self._watch_task: asyncio.Task[None] | None = None
        self._since = datetime.now(UTC)
        self.run: Run | None = None

    def _edge_yaml(
        self, site: str, gateway: str, building: str, ids: list[str], uplink: Broker | None
    ) -> str:
        devices = []
        for device_id in ids:
            info = self.community.info[device_id]
            device: dict[str, object] = {"id": info.id, "kind": info.kind}
            for key in ("unit", "room", "resident"):
                if getattr(info, key) is not None:
                    device[key] = getattr(info, key)
            device["interval_s"] = info.interval_s
            devices.append(device)
        config: dict[str, object] = {
            "site": site,
            "gateway": gateway,
            "building": building,
            "data_dir": str(self.tmp / f"{gateway}-data"),
            "broker": {"host": self.broker.host, "port": self.broker.port},
            "devices": devices,
            # By default life safety only: alarms that need no build-up time (the gateways'
            # rules run on wall time, the scenario at `speed` times that).
            "rules": {"include": list(self.rules)},
            "uplink_retry_s": 0.5,
            "uplink_retry_max_s": 2.0,
            "heartbeat_s": 1.0,
        }
        if uplink is not None:
            config["uplink"] = {"host": uplink.host, "port": uplink.port}
        return yaml.safe_dump(config, sort_keys=False)

    # -- processes ----------------------------------------------------------------------------

    def add_hub(self, name: str) -> HubProcess:
        hub = HubProcess(
            name,
            self.broker,
            self.database_url,
            policy=self.policy,
            log_path=self.tmp / f"{name}-{len(self.hubs)}.log",
        )
        self.hubs.append(hub)
        hub.start()
        return hub

    async def start(self, hubs: int = 1) -> None:
        """Watcher, hubs, edge agents (each seen online by its heartbeat); not the simulator."""
        self.watcher.link = MqttLink(
            self.broker,
            client_id=f"faults-watcher-{self.name}",
            subscriptions=self.watcher.subscriptions(),
            handler=self.watcher.on_message,
        )
        self._watch_task = asyncio.create_task(self.watcher.link.run())
        assert await self.watcher.link.wait_connected(10)
        for n in range(hubs):
            self.add_hub(f"hub-{n + 1}")
        for hub in self.hubs:
            await hub.wait_ready(60)
        for gateway in self.gateways.values():
            gateway.process.start()
        await self.wait_gateways_online()

    async def wait_gateways_online(self, timeout: float = 60) -> None:
        def online() -> bool:
            beats = self.watcher.heartbeats
            return all(
                g in beats and beats[g][1].state == "online" and beats[g][0] > self._since
                for g in self.gateways
            )

        self._since = datetime.now(UTC)
        await wait_for(online, timeout=timeout, what="every gateway online")

    async def play(self, seed: int | None = None) -> Run:
        """Start the simulator; return once it has begun playing (its truth is written).
        Again after it ended: another pass (with ``seed``, other readings)."""
        self.truth_path.unlink(missing_ok=True)
        self.sim.command = self._sim_command + ([] if seed is None else ["--seed", str(seed)])
        self.sim.start()
        await wait_for(
            lambda: self.truth_path.exists() or not self.sim.running(),
            timeout=60,
            what="the simulator to start playing",
        )
        assert self.truth_path.exists(), self.sim.log()
        self.run = Run.read(self.truth_path)
        return self.run

    async def at(self, simulated_s: float) -> None:
        """Wait until the scenario has played ``simulated_s`` seconds (device-paced time)."""
        assert self.run is not None
        due = self.run.played_at.timestamp() + simulated_s / self.speed
        # The moment itself is what is awaited (the fault is placed in the scenario's time).
        await asyncio.sleep(max(0.0, due - time.time()))

    async def wait_played(self) -> None:
        assert self.run is not None
        length = (self.run.truth.end - self.run.truth.start).total_seconds() / self.speed
        await wait_for(
            lambda: not self.sim.running(), timeout=length + 60, what="the simulator's end"
        )
        assert self.sim.process is not None and self.sim.process.returncode == 0, self.sim.log()

    def sim_counters(self) -> dict[str, int]:
        path = self.tmp / "sim-counters.json"
        counters: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        return counters

    # -- checking -----------------------------------------------------------------------------

    def check(self) -> Result:
        assert self.run is not None
        plays = [(speaker, broadcast) for speaker, broadcast, _ in self.watcher.played]
        evidence = Evidence.gather(self.store, self.smtp.messages, self.webhook.bodies, plays)
        return check(self.name, self.run, evidence, notified=self.notified, speakers=self.speakers)

    def _settled(self) -> bool:
        """Every gateway's outbox empty (by its latest heartbeat), no notice waiting."""
        beats = self.watcher.heartbeats
        if any(g not in beats or beats[g][1].outbox_depth for g in self.gateways):
            return False
        from sqlalchemy import func, select

        from hub.tables import DeliveryRow

        with self.store.reading() as session:
            waiting = session.execute(
                select(func.count()).where(DeliveryRow.status != "sent")
            ).scalar_one()
        return int(waiting) == 0

    async def settle(self, timeout: float = 90) -> Result:
        """Wait until nothing is lost any more and everything is delivered; then check."""
        deadline = time.monotonic() + timeout
        while True:
            for gateway in self.gateways.values():
                if not gateway.process.running():
                    tail = gateway.process.log()[-3000:]
                    pytest.fail(f"{gateway.gateway}'s agent died:\n{tail}\n{self.check().report()}")
            result = self.check()
            if result.lost == 0 and self._settled():
                break
            if time.monotonic() > deadline:
                print(f"\n{result.report()}")  # noqa: T201  # the figures, even when failing
                pytest.fail(f"timed out after {timeout}s: {result.report()}\n{self.diagnosis()}")
            await asyncio.sleep(0.5)
        print(f"\n{result.report()}")  # noqa: T201  # the suite's figures: see docs/reliability.md
        return result

    def diagnosis(self) -> str:
        """What the simulator and the gateways counted: rejects, failed commands, depth."""
        lines = [
            f"simulator: {self.sim_counters()}",
            f"play commands to speakers: {len(self.watcher.commands)}, "
            f"distinct (speaker, broadcast): {len(set(self.watcher.commands))}",
        ]
        for gateway, (_, beat) in sorted(self.watcher.heartbeats.items()):
            counters = {
                k: v
                for k, v in beat.counters.items()
                if "rejected" in k or "error" in k or "unsent" in k or "dropped" in k
            }
            lines.append(f"{gateway}: outbox {beat.outbox_depth}, {counters}")
        return "\n".join(lines)

    def assert_clean_logs(self) -> None:
        for hub in self.hubs:
            assert "Traceback" not in hub.log(), hub.log()
        for gateway in self.gateways.values():
            log = gateway.process.log()
            assert "Traceback" not in log, log

    async def close(self) -> None:
        self.sim.stop()
        for gateway in self.gateways.values():
            gateway.process.stop()
        for hub in self.hubs:
            hub.stop()
        if self._watch_task is not None:
            await stop(self._watch_task)
        self.store.close()
