"""Several hub processes on one broker and one database, and a fleet of gateways that sends
them alert events and counts the acks: for the multi-hub acceptance test and the benchmark."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import httpx

from bus import Broker, Incoming, MqttLink
from bus.broker import free_port
from bus.tasks import stop
from wire import Ack, AlertEvent, Codec, Phase, Severity, topics, uuid7
from wire.topics import Channel

codec = Codec()


class HubProcess:
    """``python -m hub`` in a subprocess, configured through the environment."""

    def __init__(
        self,
        name: str,
        broker: Broker,
        database_url: str,
        *,
        policy: Path | None = None,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "ANMIN_HUB_DB": database_url,
            "ANMIN_BROKER_HOST": broker.host,
            "ANMIN_BROKER_PORT": str(broker.port),
            "ANMIN_HUB_CLIENT_ID": name,
            "ANMIN_HUB_PORT": str(self.port),
            "ANMIN_HUB_AUTH": "no",
            "ANMIN_LOG_LEVEL": "WARNING",
            **({"ANMIN_HUB_POLICY": str(policy)} if policy else {}),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hub"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()}")
                try:
                    response = await client.get("/health")
                    if response.json().get("mqtt") == "connected":
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def make_events(
    count: int,
    *,
    duplicates: int,
    gateways: int = 10,
    keys_per_gateway: int = 20,
    site: str = "bench",
    seed: int = 7,
    now: datetime | None = None,
) -> tuple[list[AlertEvent], list[AlertEvent]]:
    """(unique events, the sending order with ``duplicates`` resends mixed in).

    ``count`` is the total sent. Causes are gateways x keys, so incidents = that product.
    """
    rng = random.Random(seed)
    start = now or datetime.now(UTC)
    unique: list[AlertEvent] = []
    for i in range(count - duplicates):
        g, k = i % gateways, (i // gateways) % keys_per_gateway
        at = start + timedelta(milliseconds=i)
        unique.append(
            AlertEvent(
                id=uuid7(int(at.timestamp() * 1000), rng.getrandbits),
                key=f"gas:unit-{k}",
                phase=Phase.RAISED if i < gateways * keys_per_gateway else Phase.UPDATED,
                severity=Severity.SEVERE,
                kind="gas",
                rule="gas_high",
                site=site,
                gateway=f"gw-{g}",
                device=f"gas-{k}",
                building=f"b{g}",
                unit=f"u{k}",
                ts=at,
                evidence={"gas_lel": 30.0},
                message="LEL 30%",
            )
        )
    order = list(unique)
    for _ in range(duplicates):
        position = rng.randrange(1, len(order))
        order.insert(
            position, unique[rng.randrange(position if position < len(unique) else len(unique))]
        )
    return unique, order


class Fleet:
    """Gateways (one MQTT client) that publish alert events and collect the hubs' acks."""

    def __init__(self, broker: Broker, site: str, gateways: Sequence[str]) -> None:
        self.site = site
        self.acked: dict[str, int] = {}
        self.first_ack: float | None = None
        self.last_ack: float = 0.0
        self.link = MqttLink(
            broker,
            client_id=f"fleet-{uuid7()[-6:]}",
            subscriptions=[(topics.gateway_topic(Channel.ACK, site, g), 1) for g in gateways],
            handler=self._ack,
        )
        self._task: asyncio.Task[None] | None = None

    async def _ack(self, message: Incoming) -> None:
        ack = codec.decode(message.payload, Ack, datetime.now(UTC), check_time=False)
        for event_id in ack.ids:
            self.acked[event_id] = self.acked.get(event_id, 0) + 1
        self.last_ack = time.perf_counter()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.link.run())
        if not await self.link.wait_connected(timeout=10):
            raise TimeoutError("the fleet could not connect")

    async def send(self, events: Sequence[AlertEvent]) -> None:
        for event in events:
            await self.link.publish(
                topics.gateway_topic(Channel.ALERT, event.site, event.gateway),
                codec.encode(event),
                qos=1,
            )

    async def close(self) -> None:
        if self._task is not None:
            await stop(self._task)
