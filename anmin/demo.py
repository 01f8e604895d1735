"""``anmin demo``: the whole alarm path on one machine, with embedded defaults.

A broker (Mosquitto when installed, else amqtt in-process), the hub with SQLite, one gateway's
edge agent and a simulated building whose kitchen starts leaking gas after ``leak_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from anmin.console import LiveConsole, Milestones
from bus import Broker, MqttLink
from wire import topics

SITE = "demo"
GATEWAY = "gw-1"
BUILDING = "b1"
GAS_DEVICE = "gas-b1-101"
SPEAKER = "spk-b1"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "anmin" / "demo"


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    http_port: int = 8080
    leak_after_s: float = 15.0
    seed: int = 7
    # Stop by itself this long after the first speaker receipt (None: run until Ctrl-C).
    exit_after_receipt_s: float | None = None
    timeout_s: float | None = None
    force_embedded_broker: bool = False


class _EmbeddedBroker:
    """amqtt in this process, for machines without Mosquitto (no shared subscriptions)."""

    def __init__(self, port: int) -> None:
        from amqtt.broker import Broker as AmqttBroker

        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {}},
        }
        self._broker = AmqttBroker(config)

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.shutdown()


def edge_config_text(broker: Broker, data_dir: Path) -> str:
    """The demo gateway's config, in the same YAML an installer writes (see deploy/)."""
    return f"""\
site: {SITE}
gateway: {GATEWAY}
building: {BUILDING}
data_dir: {data_dir}
broker: {{host: {broker.host}, port: {broker.port}}}
devices:
  - {{id: {GAS_DEVICE}, kind: gas, unit: "101", room: kitchen}}
  - {{id: {SPEAKER}, kind: speaker}}
uplink_retry_s: 1
heartbeat_s: 5
"""


async def run_demo(options: DemoOptions, console: Console) -> int:
    """Run until Ctrl-C (or the exit condition); return the process exit code."""
    from bus.broker import Mosquitto, free_port, mosquitto_binary
    from edge import EdgeAgent, parse
    from firmware_sim.scenarios import gas_leak_building
    from hub import HubSettings, serve

    data_dir = options.data_dir
    # Each demo starts from a clean slate so that what it shows is this run's story.
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    milestones = Milestones()

    broker_port = free_port()
    mosquitto: Mosquitto | None = None
    embedded: _EmbeddedBroker | None = None
    if mosquitto_binary() and not options.force_embedded_broker:
        mosquitto = Mosquitto(broker_port, data_dir / "mosquitto")
        mosquitto.start()
        broker_name = f"Mosquitto on 127.0.0.1:{broker_port}"
    else:
        embedded = _EmbeddedBroker(broker_port)
        await embedded.start()
        broker_name = f"embedded amqtt broker on 127.0.0.1:{broker_port}"
    broker = Broker("127.0.0.1", broker_port)

    wanted = options.http_port
    http_port = wanted if wanted and port_is_free(wanted) else free_port()
    hub_settings = HubSettings(
        database_url=f"sqlite:///{data_dir / 'hub.sqlite3'}",
        broker=broker,
        client_id="anmin-hub-demo",
        shared_subscription=mosquitto is not None,
        http_host="127.0.0.1",
        http_port=http_port,
        # The demo runs on 127.0.0.1 for one person at a terminal; a deployment keeps auth on.
        auth_required=False,
    )
    edge_config = parse(edge_config_text(broker, data_dir / "edge"), "<demo edge config>")
    agent = EdgeAgent(edge_config)
    building = gas_leak_building(
        broker,
        site=SITE,
        gateway=GATEWAY,
        building=BUILDING,
        seed=options.seed,
        leak_after_s=options.leak_after_s,
    )
    done = asyncio.Event()
    live = LiveConsole(console, milestones, on_receipt=done.set)
    observer = MqttLink(
        broker,
        client_id="anmin-demo-console",
        subscriptions=[(topics.everything_filter(SITE), 1)],
        handler=live,
    )

    console.print(
        Panel.fit(
            f"[bold]Anmin demo[/] (安民)\n"
            f"broker: {broker_name}\n"
            f"hub:    http://127.0.0.1:{http_port}/  (alerts: /api/alerts, health: /health)\n"
            f"data:   {data_dir}\n"
            f"A gas leak starts in unit 101's kitchen after {options.leak_after_s:.0f} s. "
            "Ctrl-C stops everything.",
            border_style="blue",
        )
    )
    code = 0
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(observer.run())
            await observer.wait_connected(10)
            tasks.create_task(serve(hub_settings))
            tasks.create_task(agent.run())
            tasks.create_task(building.run())
            stopper = tasks.create_task(_stop_when(done, options))
            await stopper
            code = stopper.result()
            raise _Finished
    except* _Finished:
        pass
    finally:
        agent.close()
        if mosquitto is not None:
            mosquitto.close()
        if embedded is not None:
            with contextlib.suppress(Exception):
                await embedded.stop()
        _print_milestones(console, milestones)
    return code


class _Finished(Exception):
    """Raised inside the task group to cancel every demo task at once."""


async def _stop_when(done: asyncio.Event, options: DemoOptions) -> int:
    if options.exit_after_receipt_s is None and options.timeout_s is None:
        await asyncio.Event().wait()  # until Ctrl-C
    try:
        async with asyncio.timeout(options.timeout_s):  # not wait_for: see bus.tasks
            await done.wait()
    except TimeoutError:
        return 1
    if options.exit_after_receipt_s:
        await asyncio.sleep(options.exit_after_receipt_s)
    return 0


def _print_milestones(console: Console, milestones: Milestones) -> None:
    steps = ["alert", "siren", "hub", "broadcast", "receipt"]
    parts = [
        f"{step} {milestones.seen[step]:.1f}s" if step in milestones.seen else f"{step} -"
        for step in steps
    ]
    console.print("[bold]alarm path:[/] " + " -> ".join(parts))


SAMPLE_COMMUNITY = (
    Path(__file__).resolve().parents[1] / "firmware-sim" / "scenarios" / "sample-community.yaml"
)


@dataclass(frozen=True)
class CommunityOptions:
    data_dir: Path
    scenario: Path = SAMPLE_COMMUNITY
    speed: float = 1.0
    seed: int = 7
    http_port: int = 8080


async def run_community_demo(options: CommunityOptions, console: Console) -> int:
    """The sample community (2 sites, 4 buildings, ~300 devices, two hours with incidents in
    the first): one edge agent per gateway with every rule preset, the hub, and the simulator
    at ``speed``."""
    from bus.broker import Mosquitto, free_port
    from edge import EdgeAgent
    from edge.config import BrokerConfig, DeviceConfig, EdgeConfig
    from firmware_sim import community
    from firmware_sim.runner import ScenarioRunner, run_start, utc_now
    from firmware_sim.scenario import load_scenario, seconds
    from hub import HubSettings, serve
    from rules import RuleSet
    from rules.ruleset import preset_names
    from wire.topics import Channel

    shutil.rmtree(options.data_dir, ignore_errors=True)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(options.scenario)
    duration = seconds(scenario.duration)
    sim = community.build(
        scenario, seed=options.seed, start=run_start(utc_now(), duration, options.speed)
    )
    duration = (sim.end - sim.start).total_seconds()
    mosquitto = Mosquitto(free_port(), options.data_dir / "mosquitto")
    mosquitto.start()
    broker = mosquitto.broker
    wanted = options.http_port
    http_port = wanted if wanted and port_is_free(wanted) else free_port()
    # One CO profile (UL 2034). Faster than real time the devices' clocks run ahead of the
    # gateways', which the device-health preset rightly reports as clock skew: left out then.
    skip = {"co-en50291"} | ({"device-health"} if options.speed != 1 else set())
    rules = RuleSet(include=[n for n in preset_names() if n not in skip])
    agents = []
    for (site, gateway), device_ids in sim.gateways().items():
        infos = [sim.info[d] for d in device_ids]
        devices = [
            DeviceConfig(
                id=i.id,
                kind=i.kind,  # type: ignore[arg-type]  # the simulator's kinds are the edge's
                unit=i.unit,
                room=i.room,
                resident=i.resident,
                interval_s=i.interval_s,
            )
            for i in infos
        ]
        config = EdgeConfig(
            site=site,
            gateway=gateway,
            building=infos[0].building,
            data_dir=str(options.data_dir / gateway),
            broker=BrokerConfig(broker.host, broker.port),
            devices=devices,
            rules=rules,
        )
        agents.append(EdgeAgent(config))
    live = LiveConsole(console, Milestones(), quiet=frozenset({Channel.READING, Channel.STATUS}))
    observer = MqttLink(
        broker,
        client_id="anmin-demo-console",
        subscriptions=[(topics.everything_filter(), 1)],
        handler=live,
    )
    runner = ScenarioRunner(sim, broker, speed=options.speed, connections="gateway")
    console.print(
        Panel.fit(
            f"[bold]Anmin community demo[/] (安民): {scenario.name}\n"
            f"{len(sim.info)} devices on {len(agents)} gateways; "
            f"{len(sim.incidents)} incidents over {duration / 60:.0f} simulated minutes, "
            f"played at {options.speed:g}x\n"
            f"hub: http://127.0.0.1:{http_port}/  broker: 127.0.0.1:{broker.port}\n"
            "Rules run on the gateways' clocks: at speeds above 1, alarms that need time "
            "(CO dose, inactivity) come later than the simulated incidents. Ctrl-C stops.",
            border_style="blue",
        )
    )
    settings = HubSettings(
        database_url=f"sqlite:///{options.data_dir / 'hub.sqlite3'}",
        broker=broker,
        client_id="anmin-hub-demo",
        http_port=http_port,
        # The demo runs on 127.0.0.1 for one person at a terminal; a deployment keeps auth on.
        auth_required=False,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(observer.run())
            await observer.wait_connected(10)
            tasks.create_task(serve(settings))
            for agent in agents:
                tasks.create_task(agent.run())
            await runner.run()
            raise _Finished
    except* _Finished:
        pass
    finally:
        for agent in agents:
            agent.close()
        mosquitto.close()
        expected = Counter(i.kind for i in sim.incidents)
        console.print(f"[bold]incidents played:[/] {dict(expected)}")
        console.print(f"[bold]alerts raised:[/] {dict(live.alert_kinds)}")
    return 0
