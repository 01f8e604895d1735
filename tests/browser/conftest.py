"""The browser tests' world: a real Mosquitto, a real hub process (auth on, real users), and
one headless Debian Chromium driven by Playwright for the whole package.

Chromium is the system's (``apt-get install -y chromium``); Playwright's own browser download
is never used. axe-core comes from npm (``npm ci --prefix tests/browser``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt import publish

from bus.broker import Mosquitto, free_port
from wire import AlertEvent, Codec, Heartbeat, Phase, Severity, topics, uuid7
from wire.topics import Channel

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = HERE.parent.parent / "docs" / "screenshots"
PASSWORD = "correct horse battery"
ADMIN_PASSWORD = "admin password of the test hub"
SITE = "s1"
PHONE = {"width": 390, "height": 844}  # an ordinary phone, in CSS pixels
DESKTOP = {"width": 1280, "height": 900}
codec = Codec()


def _wait(condition: Any, what: str | Callable[[], str], timeout: float = 30.0) -> Any:
    """Poll until ``condition()`` is truthy (and return it); fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (httpx.HTTPError, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout}s waiting for {said}")
        time.sleep(0.05)


@dataclass
class Hub:
    url: str
    broker: Mosquitto
    database_url: str
    vapid_public_key: str
    admin: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.admin, timeout=30)

    def publish_alert(self, event: AlertEvent) -> None:
        """An alert event as a gateway sends it: QoS 1 on the gateway's alert topic."""
        topic = topics.gateway_topic(Channel.ALERT, event.site, event.gateway)
        broker = self.broker.broker
        publish.single(topic, codec.encode(event), qos=1, hostname=broker.host, port=broker.port)

    def heartbeat(self, gateway: str, devices_online: int, *, state: str = "online") -> None:
        beat = Heartbeat(
            site=SITE, gateway=gateway, state=state,  # type: ignore[arg-type]
            ts=datetime.now(UTC), devices_online=devices_online,
        )  # fmt: skip
        topic = topics.gateway_topic(Channel.HEARTBEAT, SITE, gateway)
        broker = self.broker.broker
        publish.single(topic, codec.encode(beat), qos=1, hostname=broker.host, port=broker.port)


def alert(
    kind: str, building: str, unit: str, *, severity: Severity = Severity.SEVERE, gateway: str = ""
) -> AlertEvent:
    now = datetime.now(UTC)
    return AlertEvent(
        id=uuid7(),
        key=f"{kind}:{building}-{unit}-{uuid7()[-6:]}",
        phase=Phase.RAISED,
        severity=severity,
        kind=kind,
        rule=f"{kind}_rule",
        site=SITE,
        gateway=gateway or f"gw-{building}",
        device=f"{kind}-{building}-{unit}",
        building=building,
        unit=unit,
        ts=now,
        evidence={"value": 1.0},
        message=f"{kind} alarm in {building}-{unit}",
    )


@pytest.fixture(scope="package")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """``python -m hub`` with authentication on, seeded through its API by the administrator."""
    root = tmp_path_factory.mktemp("browser-hub")
    broker = Mosquitto(data_dir=root / "mosquitto")
    broker.start()
    port = free_port()
    env = {
        **os.environ,
        "ANMIN_HUB_DB": f"sqlite:///{root / 'hub.sqlite3'}",
        "ANMIN_BROKER_HOST": broker.broker.host,
        "ANMIN_BROKER_PORT": str(broker.broker.port),
        "ANMIN_HUB_PORT": str(port),
        "ANMIN_HUB_AUTH": "yes",
        "ANMIN_HUB_JWT_SECRET": "browser-test-secret-of-enough-length",
        "ANMIN_HUB_ADMIN": "admin",
        "ANMIN_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    # Web Push on: a VAPID key made by the hub's own command (its public key is printed).
    vapid_key = root / "vapid.pem"
    made = subprocess.run(
        [sys.executable, "-m", "hub.push", "keys", str(vapid_key)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    env["ANMIN_HUB_VAPID_KEY"] = str(vapid_key)
    env["ANMIN_HUB_VAPID_SUBJECT"] = "mailto:ops@anmin.test"
    public_key = made.stdout.split("applicationServerKey): ", 1)[1].split()[0]
    log = (root / "hub.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "hub"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(url + "/health", timeout=2).status_code == 200, "the hub")
        token = httpx.post(
            url + "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        world = Hub(
            url, broker, env["ANMIN_HUB_DB"], public_key, {"Authorization": f"Bearer {token}"}
        )
        seed(world)
        yield world
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        broker.close()


def seed(world: Hub) -> None:
    """Staff, a second staff member, the committee, two families in two buildings."""
    with world.api() as api:
        for username, name, role in [
            ("zhang-staff", "张工", "staff"),
            ("chen-staff", "陈主任", "staff"),
            ("liu-committee", "刘委员", "committee"),
            ("li-daughter", "李女士", "family"),
            ("wang-son", "王先生", "family"),
        ]:
            response = api.post(
                "/api/v1/people",
                json={"username": username, "name": name, "role": role, "password": PASSWORD},
            )
            assert response.status_code == 201, response.text
            world.ids[username] = response.json()["id"]
        for key, name, building, unit in [
            ("grandma-li", "李奶奶", "3", "301"),
            ("grandpa-wang", "王爷爷", "4", "402"),
        ]:
            response = api.post(
                "/api/v1/residents",
                json={"name": name, "site": SITE, "building": building, "unit": unit},
            )
            assert response.status_code == 201, response.text
            world.ids[key] = response.json()["id"]
        for person, resident in [("li-daughter", "grandma-li"), ("wang-son", "grandpa-wang")]:
            response = api.put(
                f"/api/v1/people/{world.ids[person]}/relatives/{world.ids[resident]}"
            )
            assert response.status_code in (200, 201, 204), response.text


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for the package (Debian's, never a downloaded one)."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (make system-deps)")
    if not AXE.exists():
        pytest.fail("axe-core is missing: npm ci --prefix tests/browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


SPEAKER_GATEWAY, SPEAKER_BUILDING = "gw-3", "3"
SPEAKERS = ("spk-3-1", "spk-3-2", "spk-3-3")


class SpeakerBuilding:
    """Building 3's gateway (a real edge agent) and its three simulated loudspeakers, on the
    test's Mosquitto, run in a thread of their own (the browser test itself is synchronous)."""

    def __init__(self, broker: Mosquitto, data_dir: Path) -> None:
        self.broker = broker
        self.data_dir = data_dir
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="speakers", daemon=True)

    def __enter__(self) -> SpeakerBuilding:
        self._thread.start()
        if not self.ready.wait(60) or self.error is not None:
            raise RuntimeError(f"the speakers' building did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by __enter__ or the test
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        from edge import EdgeAgent, parse
        from firmware_sim.building import SimulatedBuilding
        from firmware_sim.speaker import Speaker
        from tests.integration.edge_support import running

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        broker = self.broker.broker
        speakers = "\n".join(f"  - {{id: {s}, kind: speaker}}" for s in SPEAKERS)
        agent = EdgeAgent(
            parse(
                f'site: {SITE}\ngateway: {SPEAKER_GATEWAY}\nbuilding: "{SPEAKER_BUILDING}"\n'
                f"data_dir: {self.data_dir}\n"
                f"broker: {{host: {broker.host}, port: {broker.port}}}\n"
                f"devices:\n{speakers}\nheartbeat_s: 1\n"
            )
        )
        sim = SimulatedBuilding(
            broker, site=SITE, gateway=SPEAKER_GATEWAY, building=SPEAKER_BUILDING,
            gas_devices=[], speakers=[Speaker(s, SPEAKER_BUILDING) for s in SPEAKERS],
        )  # fmt: skip
        try:
            async with running(agent.run(), sim.run()):
                for link in (agent.local, sim.link):
                    assert await link.wait_connected(20)
                self.ready.set()
                await self._stop.wait()
        finally:
            agent.close()


@pytest.fixture
def speakers(hub: Hub, tmp_path: Path) -> Iterator[SpeakerBuilding]:
    """Building 3's speakers, known to the hub's directory (so a broadcast targets them)."""
    from hub.store import Store

    store = Store(hub.database_url)
    try:
        for speaker in SPEAKERS:
            store.add_device(SITE, SPEAKER_GATEWAY, speaker, "speaker", building="3", unit="hall")
    finally:
        store.close()
    with SpeakerBuilding(hub.broker, tmp_path / "edge") as building:
        yield building
