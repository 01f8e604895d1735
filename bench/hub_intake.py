"""Hub intake and notification throughput, on SQLite and PostgreSQL.

    .venv/bin/python bench/hub_intake.py [--events 5000] [--hubs 2]

Starts its own Mosquitto and PostgreSQL (Debian's binaries, as the tests do; PostgreSQL durable:
fsync and synchronous_commit on, as in production), runs hub processes (``python -m hub``) on a
shared subscription, and sends alert events (10% of them duplicates) from ten gateways, each
gateway in its own order and all ten at once, as ten real gateways would; prints events/s from
the first publish to the last ack. Then queues webhook notifications for many incidents and
prints notifications/s sent to a local receiver. The issue's target: >= 2,000 events/s on
PostgreSQL with 2 hub processes.

Two more lines say what bounds the figure on this machine:

* ``baseline``: the same gateways and the same number of hub processes, where each "hub" only
  decodes the events and acks them (the hub's own codec and ack batching, no database): what
  MQTT and this machine allow the intake at best.
* ``cpu``: CPU seconds per 1,000 events spent by the hubs, PostgreSQL, Mosquitto and the
  gateways (this process) during the run. Their sum against the cores the machine has is the
  ceiling; everything shares them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus import Broker, Incoming, MqttLink
from bus.broker import Mosquitto
from bus.tasks import stop
from hub.intake import AckBatcher
from hub.notify import Notifier
from hub.routing import parse_policy
from hub.store import Store
from tests.integration.hub.multihub import Fleet, HubProcess, make_events
from tests.integration.hub.postgres import PostgresCluster
from tests.integration.hub.receivers import WebhookReceiver
from wire import AlertEvent, Codec, topics
from wire.topics import Channel

GATEWAYS = 10
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 when it is gone or /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


class CpuMeter:
    """CPU seconds of groups of processes between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, Callable[[], Sequence[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, dict[int, float]]:
        return {name: {p: _cpu_seconds(p) for p in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> None:
        after = self._now()
        self.spent = {
            name: sum(t - self._before.get(name, {}).get(p, 0.0) for p, t in pids.items())
            for name, pids in after.items()
        }

    def line(self, events: int) -> str:
        per = ", ".join(f"{name} {t * 1000 / events:.2f}" for name, t in self.spent.items())
        total = sum(self.spent.values()) * 1000 / events
        return f"{per}; total {total:.2f} s per 1000 events ({os.cpu_count()} cores)"


def _postmaster(pg: PostgresCluster) -> list[int]:
    try:
        pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [pid, *_children(pid)]


async def _send(fleet: Fleet, order: Sequence[AlertEvent]) -> None:
    """Every gateway sends its own events in order, all gateways at once."""
    by_gateway: dict[str, list[AlertEvent]] = defaultdict(list)
    for event in order:
        by_gateway[event.gateway].append(event)
    async with asyncio.TaskGroup() as group:
        for events in by_gateway.values():
            group.create_task(fleet.send(events))


async def _run(
    fleet: Fleet, events: int, meter: CpuMeter, timeout: float = 600
) -> tuple[float, int]:
    """Send, wait for every unique event's ack; (events/s, events sent)."""
    await fleet.start()
    unique, order = make_events(events, duplicates=events // 10, gateways=GATEWAYS)
    want = {e.id for e in unique}
    meter.start()
    started = time.perf_counter()
    await _send(fleet, order)
    deadline = started + timeout
    while not want <= fleet.acked.keys():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {len(want & fleet.acked.keys())} of {len(want)} acked")
        await asyncio.sleep(0.02)
    meter.stop()
    return len(order) / (fleet.last_ack - started), len(order)


async def intake(
    url: str, hubs: int, events: int, broker: Mosquitto, tmp: Path, pg: PostgresCluster | None
) -> tuple[float, str]:
    store = Store(url)
    store.create_schema()
    store.close()
    processes = [
        HubProcess(f"bench-hub-{n}", broker.broker, url, log_path=tmp / f"hub-{n}.log")
        for n in range(hubs)
    ]
    fleet = Fleet(broker.broker, "bench", [f"gw-{g}" for g in range(GATEWAYS)])
    meter = CpuMeter(
        {
            "hubs": lambda: [p.process.pid for p in processes if p.process is not None],
            **({"postgres": lambda: _postmaster(pg)} if pg is not None else {}),
            "mosquitto": lambda: [broker.process.pid] if broker.process is not None else [],
            "gateways": lambda: [os.getpid()],
        }
    )
    try:
        for process in processes:
            process.start()
        for process in processes:
            await process.wait_ready()
        rate, sent = await _run(fleet, events, meter)
        return rate, meter.line(sent)
    finally:
        await fleet.close()
        for process in processes:
            process.stop()


async def echo_hub(port: int, name: str) -> None:
    """A "hub" that only decodes each alert event and acks it (``--echo-hub``)."""
    codec = Codec()
    link = MqttLink(
        Broker(port=port),
        client_id=name,
        subscriptions=[(topics.hub_filter(Channel.ALERT, shared=True), 1)],
    )
    acks = AckBatcher(link)

    async def handle(message: Incoming) -> None:
        event = codec.decode(message.payload, AlertEvent, datetime.now(UTC), check_time=False)
        acks.add(event.site, event.gateway, event.id)

    link.handler = handle
    task = asyncio.create_task(link.run())
    ack_task = asyncio.create_task(acks.run())
    await link.wait_connected(timeout=10)
    print("ready", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    finally:
        await stop(ack_task)
        await stop(task)


async def baseline(hubs: int, events: int, broker: Mosquitto) -> tuple[float, str]:
    echoes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--echo-hub",
            str(broker.broker.port),
            f"echo-{n}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(hubs)
    ]
    fleet = Fleet(broker.broker, "bench", [f"gw-{g}" for g in range(GATEWAYS)])
    meter = CpuMeter(
        {
            "echo hubs": lambda: [p.pid for p in echoes],
            "mosquitto": lambda: [broker.process.pid] if broker.process is not None else [],
            "gateways": lambda: [os.getpid()],
        }
    )
    try:
        for echo in echoes:
            assert echo.stdout is not None
            async with asyncio.timeout(30):
                if await echo.stdout.readline() != b"ready\n":
                    raise RuntimeError("an echo hub did not start")
        rate, sent = await _run(fleet, events, meter)
        return rate, meter.line(sent)
    finally:
        await fleet.close()
        for echo in echoes:
            if echo.stdin is not None:
                echo.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await echo.wait()
            except TimeoutError:
                echo.kill()
                await echo.wait()


async def notifications(url: str, count: int) -> float:
    receiver = WebhookReceiver()
    receiver.start()
    store = Store(url)
    store.create_schema()
    try:
        store.add_person("bench-committee", "Bench", "committee")
        policy = parse_policy(
            "version: 1\n"
            f"channels: {{ops: {{type: webhook, url: '{receiver.url}'}}}}\n"
            "routes: [{name: all, tiers: [{roles: [committee], channels: [ops]}]}]\n"
        )
        now = datetime.now(UTC)
        unique, _ = make_events(count, duplicates=0, gateways=GATEWAYS, keys_per_gateway=count)
        store.record_alert_events(unique, now)  # one incident each
        notifier = Notifier(store, policy, concurrency=32)
        started = time.perf_counter()
        await notifier.tick(now)
        while receiver.count() < count and time.perf_counter() - started < 120:
            now += policy.retry_after * 8  # past any retry's backoff
            await notifier.tick(now)
        elapsed = time.perf_counter() - started
        await notifier.aclose()
        if receiver.count() != count:
            raise RuntimeError(f"{receiver.count()} of {count} notifications arrived")
        return count / elapsed
    finally:
        store.close()
        receiver.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--hubs", type=int, default=2)
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--no-baseline", action="store_true", help="skip the decode-and-ack run")
    parser.add_argument("--echo-hub", nargs=2, metavar=("PORT", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_hub:
        await echo_hub(int(args.echo_hub[0]), args.echo_hub[1])
        return
    with (
        tempfile.TemporaryDirectory(prefix="anmin-bench-") as tmp_name,
        Mosquitto(data_dir=Path(tmp_name) / "mosquitto") as broker,
        PostgresCluster(durable=True) as pg,
    ):
        tmp = Path(tmp_name)
        sqlite_url = f"sqlite:///{tmp / 'hub.sqlite3'}"
        rate, cpu = await intake(sqlite_url, 1, args.events, broker, tmp, None)
        print(f"intake   SQLite,     1 hub:  {rate:8.0f} events/s  ({args.events} events)")
        print(f"  cpu: {cpu}")
        pg_url = pg.create_database("intake")
        rate, cpu = await intake(pg_url, args.hubs, args.events, broker, tmp, pg)
        print(
            f"intake   PostgreSQL, {args.hubs} hubs: {rate:8.0f} events/s  ({args.events} events;"
            " target >= 2000)"
        )
        print(f"  cpu: {cpu}")
        if not args.no_baseline:
            rate, cpu = await baseline(args.hubs, args.events, broker)
            print(
                f"baseline decode + ack only, {args.hubs} hubs: {rate:8.0f} events/s"
                "  (no database: what MQTT allows the intake here)"
            )
            print(f"  cpu: {cpu}")
        for name, url in (("SQLite", f"sqlite:///{tmp / 'notify.sqlite3'}"),
                          ("PostgreSQL", pg.create_database("notify"))):  # fmt: skip
            rate = await notifications(url, args.notifications)
            print(f"notify   {name:10s}  webhook: {rate:8.0f} notifications/s")


if __name__ == "__main__":
    asyncio.run(main())
