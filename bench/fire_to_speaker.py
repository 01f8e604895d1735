"""Fire to speaker: from a fire reading at a sensor to the first speaker playing the hub's warning.

Starts its own Mosquitto, then in this one process: the real edge agent (``EdgeAgent``, with
the ``rules/presets/smoke.yaml`` rules: smoke plus heat in one unit is a confirmed fire,
Extreme), the real hub (``hub.create_app``: MQTT intake, SQLite store, the automatic fire
policy, CAP 1.2, publish), and two simulated speakers (``SimulatedBuilding``). Each round
uses a fresh unit (a new alarm): a smoke reading, then the heat reading that confirms the fire
(t0, its publish). Stamped on one clock (``time.perf_counter``) as the play commands arrive at
the speaker:

  local: the gateway's own announcement (the rule's ``speaker`` action, no hub involved);
  hub:   the hub's CAP warning for the building (edge -> hub -> store -> policy -> CAP ->
         broadcast topic -> edge -> speaker);
  covered: the hub's coverage of that warning reaching 100 % (both receipts confirmed).

    .venv/bin/python bench/fire_to_speaker.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

import bus  # noqa: E402
import wire  # noqa: E402
from bench.common import percentiles  # noqa: E402
from bus.broker import Mosquitto  # noqa: E402
from bus.tasks import stop  # noqa: E402
from edge import EdgeAgent, parse  # noqa: E402
from firmware_sim.building import SimulatedBuilding  # noqa: E402
from firmware_sim.speaker import Speaker  # noqa: E402
from hub import HubSettings, create_app  # noqa: E402
from hub.broadcasting import Broadcasts  # noqa: E402
from rules import load_rules  # noqa: E402

SITE, GATEWAY, BUILDING = "bench", "gw-fire", "b1"
SPEAKERS = ("spk-1", "spk-2")


class StampedSpeaker(Speaker):
    """A speaker that notes when each broadcast's first play command reached it."""

    def __init__(self, device_id: str, building: str, stamps: dict[str, tuple[float, bool]]):
        super().__init__(device_id, building)
        self.stamps = stamps

    def apply(self, cmd: wire.Command, now: datetime) -> wire.Receipt | None:
        b = cmd.broadcast
        if cmd.action == "play" and b is not None and b.cause is not None:
            self.stamps.setdefault(
                b.cause + ("/hub" if b.cap else "/local"), (time.perf_counter(), True)
            )
        return super().apply(cmd, now)


def edge_yaml(broker: bus.Broker, data_dir: Path, rounds: int) -> str:
    sensors = "\n".join(
        f"  - {{id: smoke-{n}, kind: smoke, unit: u{n}}}\n"
        f"  - {{id: heat-{n}, kind: heat, unit: u{n}}}"
        for n in range(rounds)
    )
    speakers = "\n".join(f"  - {{id: {s}, kind: speaker}}" for s in SPEAKERS)
    return f"""\
site: {SITE}
gateway: {GATEWAY}
building: {BUILDING}
data_dir: {data_dir}
broker: {{host: {broker.host}, port: {broker.port}}}
devices:
{sensors}
{speakers}
heartbeat_s: 5
"""


def reading(device: str, seq: int, metric: str, value: float) -> bytes:
    r = wire.Reading(device=device, seq=seq, ts=datetime.now(UTC), values={metric: value})
    return wire.Codec().encode(r)


async def run(rounds: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(data_dir=Path(tmp) / "mq") as broker:
        config = parse(edge_yaml(broker.broker, Path(tmp) / "edge", rounds))
        rules = load_rules(ROOT / "rules" / "presets" / "smoke.yaml")
        agent = EdgeAgent(msgspec.structs.replace(config, rules=rules, rules_file=None))
        stamps: dict[str, tuple[float, bool]] = {}
        speakers = [StampedSpeaker(s, BUILDING, stamps) for s in SPEAKERS]
        sim = SimulatedBuilding(
            broker.broker,
            site=SITE,
            gateway=GATEWAY,
            building=BUILDING,
            gas_devices=[],
            speakers=speakers,
        )
        settings = HubSettings(
            broker=broker.broker,
            database_url=f"sqlite:///{tmp}/hub.sqlite3",
            client_id="bench-hub",
            auth_required=False,
            timer_interval_s=3600.0,
        )
        app = create_app(settings)
        sensors = bus.MqttLink(broker.broker, client_id="bench-sensors")
        results: dict[str, list[float]] = {"local": [], "hub": [], "covered": []}
        seen: set[str] = set()
        async with app.router.lifespan_context(app):
            store = app.state.store
            for s in SPEAKERS:
                store.add_device(SITE, GATEWAY, s, "speaker", building=BUILDING, unit="lobby")
            tasks = [asyncio.create_task(x) for x in (agent.run(), sim.run(), sensors.run())]
            try:
                for link in (agent.local, sim.link, sensors, app.state.link):
                    assert await link.wait_connected(10)
                broadcasts = Broadcasts(store)
                for n in range(rounds):
                    smoke, heat = f"smoke-{n}", f"heat-{n}"
                    topic = wire.topics.reading
                    await sensors.publish(
                        topic(SITE, GATEWAY, smoke), reading(smoke, 1, "smoke_obs", 6.0), qos=1
                    )
                    await asyncio.sleep(0.2)
                    t0 = time.perf_counter()
                    await sensors.publish(
                        topic(SITE, GATEWAY, heat), reading(heat, 1, "temp_c", 70.0), qos=1
                    )
                    deadline = time.monotonic() + 20
                    cause = None
                    while time.monotonic() < deadline:
                        hub = [
                            k for k in stamps if k.endswith("/hub") and k.split("/")[0] not in seen
                        ]
                        if hub:
                            cause = hub[0].split("/")[0]
                            break
                        await asyncio.sleep(0.001)
                    if cause is None:
                        print(f"round {n}: no hub warning within 20 s", file=sys.stderr)
                        continue
                    seen.add(cause)
                    results["hub"].append(stamps[cause + "/hub"][0] - t0)
                    if cause + "/local" in stamps:
                        results["local"].append(stamps[cause + "/local"][0] - t0)
                    record = next(b for b in broadcasts.views(limit=5) if b.cause == cause)
                    while time.monotonic() < deadline:
                        coverage = await asyncio.to_thread(broadcasts.coverage, record.id)
                        if coverage is not None and coverage.confirmed == len(SPEAKERS):
                            results["covered"].append(time.perf_counter() - t0)
                            break
                        await asyncio.sleep(0.005)
                    await asyncio.sleep(0.3)
            finally:
                for task in tasks:
                    await stop(task)
                agent.close()
        return {k: percentiles([v * 1000 for v in vs]) for k, vs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        figures = asyncio.run(run(args.rounds))
        print(f"fire reading -> first speaker playing, {args.rounds} rounds (ms):")
        for stage, p in figures.items():
            print(
                f"  {stage:8s} n={p['n']:.0f}  p50={p['p50']:.1f}  p99={p['p99']:.1f}  "
                f"max={p['max']:.1f}"
            )


if __name__ == "__main__":
    main()
