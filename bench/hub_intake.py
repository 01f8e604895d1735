"""Hub intake and notification throughput, on SQLite and PostgreSQL.

    .venv/bin/python bench/hub_intake.py [--events 5000] [--hubs 2]

Starts its own Mosquitto and PostgreSQL (Debian's binaries, as the tests do), runs hub
processes (``python -m hub``) on a shared subscription, and sends alert events (10% of them
duplicates) from ten gateways; prints events/s from the first publish to the last ack. Then
queues webhook notifications for many incidents and prints notifications/s sent to a local
receiver. The issue's target: >= 2,000 events/s on PostgreSQL with 2 hub processes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.broker import Mosquitto
from hub.notify import Notifier
from hub.routing import parse_policy
from hub.store import Store
from tests.integration.hub.multihub import Fleet, HubProcess, make_events
from tests.integration.hub.postgres import PostgresCluster
from tests.integration.hub.receivers import WebhookReceiver

GATEWAYS = 10


async def intake(url: str, hubs: int, events: int, broker: Mosquitto, tmp: Path) -> float:
    store = Store(url)
    store.create_schema()
    store.close()
    processes = [
        HubProcess(f"bench-hub-{n}", broker.broker, url, log_path=tmp / f"hub-{n}.log")
        for n in range(hubs)
    ]
    fleet = Fleet(broker.broker, "bench", [f"gw-{g}" for g in range(GATEWAYS)])
    try:
        for process in processes:
            process.start()
        for process in processes:
            await process.wait_ready()
        await fleet.start()
        unique, order = make_events(events, duplicates=events // 10, gateways=GATEWAYS)
        want = {e.id for e in unique}
        started = time.perf_counter()
        await fleet.send(order)
        deadline = started + 600
        while not want <= fleet.acked.keys():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(want & fleet.acked.keys())} of {len(want)} acked")
            await asyncio.sleep(0.02)
        return len(order) / (fleet.last_ack - started)
    finally:
        await fleet.close()
        for process in processes:
            process.stop()


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
        for event in unique:  # one incident each
            store.record_alert_event(event, now)
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
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="anmin-bench-") as tmp_name,
        Mosquitto(data_dir=Path(tmp_name) / "mosquitto") as broker,
        PostgresCluster(durable=True) as pg,
    ):
        tmp = Path(tmp_name)
        sqlite_url = f"sqlite:///{tmp / 'hub.sqlite3'}"
        rate = await intake(sqlite_url, 1, args.events, broker, tmp)
        print(f"intake   SQLite,     1 hub:  {rate:8.0f} events/s  ({args.events} events)")
        rate = await intake(pg.create_database("intake"), args.hubs, args.events, broker, tmp)
        print(
            f"intake   PostgreSQL, {args.hubs} hubs: {rate:8.0f} events/s  ({args.events} events;"
            " target >= 2000)"
        )
        for name, url in (("SQLite", f"sqlite:///{tmp / 'notify.sqlite3'}"),
                          ("PostgreSQL", pg.create_database("notify"))):  # fmt: skip
            rate = await notifications(url, args.notifications)
            print(f"notify   {name:10s}  webhook: {rate:8.0f} notifications/s")


if __name__ == "__main__":
    asyncio.run(main())
