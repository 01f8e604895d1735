"""Broadcast fan-out: 1,000 simulated speakers on 50 gateways, time to 99 % and 100 % of receipts.

Starts its own Mosquitto (bus.broker.Mosquitto), then in this one process:
  - 50 buildings of simulated speakers (firmware_sim.SimulatedBuilding with 20 ``Speaker``
    models each: the real device model and its MQTT runner, one connection per building);
  - 50 *lightweight gateways*: one MQTT connection each that does what the edge agent does with
    a broadcast (``EdgeAgent._on_broadcast`` / ``_play`` / ``_forward_receipt``): decode it, keep
    it if it targets its building, send a QoS 1 ``play`` command to each of its speakers, stamp
    each receipt with site/gateway/building and forward it on the gateway's receipt topic.
    Fifty full EdgeAgents (rules, SQLite outbox, telemetry) in one process would measure the
    agents' start-up and housekeeping, not the fan-out;
  - a hub-side receiver subscribed to every gateway's receipt topic.
Each round publishes one bilingual CAP broadcast (QoS 1) to the site's broadcast topic and
times the receipts from the publish. Target: 99 % within 2 s.

With ``--hub`` the warning goes through the real hub instead (``hub.create_app`` in this
process, SQLite, the speakers in its directory): composed like ``POST /api/v1/broadcasts``
(``Broadcasts.create``, CAP 1.2, then ``Broadcaster.send``), and timed also until the hub's
own coverage (receipts stored and checked against the content hash) reaches 99 % and 100 %.

    .venv/bin/python bench/broadcast_fanout.py [--gateways 50] [--speakers 20] [--rounds 5]
        [--hub]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import msgspec

import bus
import wire
from bus.broker import Mosquitto
from firmware_sim.building import SimulatedBuilding
from firmware_sim.speaker import Speaker
from wire import cap

SITE = "bench"


def now() -> datetime:
    return datetime.now(UTC)


class Gateway:
    """The edge agent's broadcast path, and nothing else."""

    def __init__(self, broker: bus.Broker, gateway: str, building: str, speakers: list[str]):
        self.gateway, self.building, self.speakers = gateway, building, speakers
        self.codec = wire.Codec()
        self.seen: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.receipt_topic = wire.topics.gateway_topic(wire.topics.Channel.RECEIPT, SITE, gateway)
        self.link = bus.MqttLink(
            broker,
            client_id=f"bench-gw-{gateway}",
            subscriptions=[
                (wire.topics.broadcast(SITE), 1),
                (
                    wire.topics.device_channel_filter(
                        SITE, gateway, wire.topics.Channel.DEVICE_RECEIPT
                    ),
                    1,
                ),
            ],
            handler=self._on_message,
        )

    async def _on_message(self, message: bus.Incoming) -> None:
        if message.topic == wire.topics.broadcast(SITE):
            b = self.codec.decode(message.payload, wire.Broadcast, now(), check_time=False)
            if (b.buildings and self.building not in b.buildings) or b.id in self.seen:
                return
            self.seen.add(b.id)
            # Like EdgeAgent._play, in the background: every speaker's command at once, each
            # awaiting its PUBACK, while the message loop goes on to the receipts.
            task = asyncio.create_task(self._play_all(b))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        receipt = self.codec.decode(message.payload, wire.Receipt, now())
        stamped = msgspec.structs.replace(
            receipt, site=SITE, gateway=self.gateway, building=self.building
        )
        await self.link.publish(self.receipt_topic, self.codec.encode(stamped), qos=1)

    async def _play_all(self, b: wire.Broadcast) -> None:
        await asyncio.gather(*(self._play(s, b) for s in self.speakers))

    async def _play(self, speaker: str, b: wire.Broadcast) -> None:
        cmd = wire.Command(id=wire.uuid7(), device=speaker, action="play", ts=now(), broadcast=b)
        topic = wire.topics.command(SITE, self.gateway, speaker)
        await self.link.publish(topic, self.codec.encode(cmd), qos=1)


class HubSide:
    def __init__(self, broker: bus.Broker) -> None:
        self.codec = wire.Codec()
        self.arrivals: dict[str, list[float]] = {}
        self.hashes: dict[str, set[str]] = {}
        self.failed = 0
        self.done = asyncio.Event()
        self.expected = 0
        self.link = bus.MqttLink(
            broker,
            client_id="bench-hub",
            subscriptions=[(wire.topics.hub_filter(wire.topics.Channel.RECEIPT), 1)],
            handler=self._on_receipt,
        )

    async def _on_receipt(self, message: bus.Incoming) -> None:
        at = time.perf_counter()
        receipt = self.codec.decode(message.payload, wire.Receipt, now())
        if receipt.outcome != "played":
            self.failed += 1
        self.arrivals.setdefault(receipt.broadcast_id, []).append(at)
        self.hashes.setdefault(receipt.broadcast_id, set()).add(receipt.content_hash)
        if len(self.arrivals[receipt.broadcast_id]) >= self.expected:
            self.done.set()


def warning(round_no: int) -> wire.Broadcast:
    t = now()
    b = wire.Broadcast(
        id=wire.uuid7(),
        site=SITE,
        ts=t,
        status="Exercise",
        severity=wire.Severity.SEVERE,
        headline="消防演习",
        text=f"第{round_no + 1}次消防演习：请沿楼梯有序撤离到小区广场。",
        repeat=2,
        expires=t + timedelta(minutes=30),
    )
    fields = cap.CapFields(
        sender="anmin@bench",
        event="消防演习",
        area=cap.Area("全小区"),
        category="Fire",
        urgency="Expected",
        certainty="Likely",
        translations=(
            cap.InfoText("en-US", "Fire drill", "Fire drill: leave by the stairs to the square."),
        ),
    )
    return cap.with_cap(b, fields)


def percentile_time(arrivals: list[float], start: float, fraction: float, total: int) -> float:
    needed = max(1, round(total * fraction))
    ordered = sorted(arrivals)
    return ordered[needed - 1] - start if len(ordered) >= needed else float("inf")


class RealHub:
    """The hub itself, in this process: compose, publish, and its coverage of each warning."""

    def __init__(self, broker: bus.Broker, data_dir: str) -> None:
        from hub import HubSettings, create_app

        settings = HubSettings(
            broker=broker,
            database_url=f"sqlite:///{data_dir}/hub.sqlite3",
            client_id="bench-real-hub",
            auth_required=False,
            timer_interval_s=3600.0,
            broadcast_retry_s=30.0,  # no retries inside a round: we time the first delivery
        )
        self.app = create_app(settings)
        self.coverage_99: list[float] = []
        self.coverage_100: list[float] = []

    async def send(self, round_no: int, speakers: int, start: float, timeout: float) -> str:
        from hub.broadcasting import ComposeRequest

        broadcaster = self.app.state.broadcaster
        request = ComposeRequest.model_validate(
            {
                "site": SITE,
                "status": "Exercise",
                "category": "Fire",
                "urgency": "Expected",
                "certainty": "Likely",
                "severity": "Severe",
                "zh": {
                    "headline": "消防演习",
                    "description": f"第{round_no + 1}次消防演习：请沿楼梯有序撤离到小区广场。",
                },
                "en": {
                    "headline": "Fire drill",
                    "description": "Fire drill: leave by the stairs to the square.",
                },
            }
        )
        view = await asyncio.to_thread(broadcaster.broadcasts.create, request, "bench", now())
        await broadcaster.send(view.id)
        deadline = time.perf_counter() + timeout
        need99 = max(1, round(speakers * 0.99))
        t99 = t100 = float("inf")
        while time.perf_counter() < deadline:
            _, confirmed = await asyncio.to_thread(broadcaster.broadcasts.counts, view.id)
            if confirmed >= need99 and t99 == float("inf"):
                t99 = time.perf_counter() - start
            if confirmed >= speakers:
                t100 = time.perf_counter() - start
                break
            await asyncio.sleep(0.05)
        self.coverage_99.append(t99)
        self.coverage_100.append(t100)
        return str(view.id)


async def run(
    gateways: int, per_gateway: int, rounds: int, timeout: float, with_hub: bool = False
) -> None:
    total = gateways * per_gateway
    with Mosquitto(persistence=False) as broker, tempfile.TemporaryDirectory() as tmp:
        real = RealHub(broker.broker, tmp) if with_hub else None
        hub_context = (
            real.app.router.lifespan_context(real.app)
            if real is not None
            else contextlib.nullcontext()
        )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(hub_context)
        hub = HubSide(broker.broker)
        hub.expected = total
        sims, gws = [], []
        for g in range(gateways):
            gateway, building = f"gw-{g:02d}", f"b{g:02d}"
            ids = [f"spk-{building}-{i:02d}" for i in range(per_gateway)]
            sims.append(
                SimulatedBuilding(
                    broker.broker,
                    site=SITE,
                    gateway=gateway,
                    building=building,
                    gas_devices=[],
                    speakers=[Speaker(s, building) for s in ids],
                )
            )
            gws.append(Gateway(broker.broker, gateway, building, ids))
        links = [hub.link, *(g.link for g in gws), *(s.link for s in sims)]
        tasks = [asyncio.create_task(hub.link.run())]
        tasks += [asyncio.create_task(g.link.run()) for g in gws]
        tasks += [asyncio.create_task(s.run()) for s in sims]
        try:
            for link in links:
                if not await link.wait_connected(30):
                    raise SystemExit(f"{link.client_id} did not connect")
            if real is not None:
                store = real.app.state.store
                for gw in gws:
                    for s in gw.speakers:
                        store.add_device(
                            SITE, gw.gateway, s, "speaker", building=gw.building, unit="lobby"
                        )
            p99s, p100s = [], []
            for r in range(rounds):
                hub.done.clear()
                start = time.perf_counter()
                if real is not None:
                    sent = await real.send(r, total, start, timeout)
                    b = next(x for x in sims[0].speakers[0].played if x.id == sent)
                else:
                    b = warning(r)
                    payload = wire.Codec().encode(b)
                    await hub.link.publish(wire.topics.broadcast(SITE), payload, qos=1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hub.done.wait(), timeout)
                arrivals = hub.arrivals.get(b.id, [])
                p99 = percentile_time(arrivals, start, 0.99, total)
                p100 = percentile_time(arrivals, start, 1.0, total)
                first = min(arrivals) - start if arrivals else float("inf")
                p99s.append(p99)
                p100s.append(p100)
                hashes = hub.hashes.get(b.id, set())
                ok = hashes == {cap.content_hash(b)}
                print(
                    f"round {r + 1}: {len(arrivals)}/{total} receipts; first in {first:.3f} s, "
                    f"99 % in {p99:.3f} s, "
                    f"100 % in {p100:.3f} s; hashes {'match' if ok else 'DIFFER'}"
                )
                if real is not None:
                    print(
                        f"         hub coverage 99 % in {real.coverage_99[-1]:.3f} s, "
                        f"100 % in {real.coverage_100[-1]:.3f} s"
                    )
            print(
                f"\n{total:,} speakers on {gateways} gateways, {rounds} rounds: "
                f"99 % of receipts in median {statistics.median(p99s):.3f} s "
                f"(worst {max(p99s):.3f} s), 100 % in median {statistics.median(p100s):.3f} s "
                f"(worst {max(p100s):.3f} s); failed receipts: {hub.failed}"
            )
            verdict = "meets" if max(p99s) <= 2.0 else "MISSES"
            print(f"target 99 % within 2 s: {verdict} (worst round {max(p99s):.3f} s)")
            if real is not None:
                print(
                    f"through the real hub: coverage 99 % in median "
                    f"{statistics.median(real.coverage_99):.3f} s "
                    f"(worst {max(real.coverage_99):.3f} s), 100 % in median "
                    f"{statistics.median(real.coverage_100):.3f} s "
                    f"(worst {max(real.coverage_100):.3f} s)"
                )
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await stack.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--speakers", type=int, default=20, help="speakers per gateway")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--hub", action="store_true", help="through the real hub (see above)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # aiomqtt warns of "pending publish calls" while a gateway waits for 20 PUBACKs at once.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(run(args.gateways, args.speakers, args.rounds, args.timeout, args.hub))


if __name__ == "__main__":
    main()
