"""schemathesis against the hub's OpenAPI schema, with authentication on.

Every operation gets generated requests twice: as an administrator (no 5xx, whatever the
input), and with no credentials at all (nothing but /health and logging in may succeed).
The hub runs as a real uvicorn server on a free port, over a real Mosquitto and a real
PostgreSQL (the stricter of the two databases: it refuses NUL characters and 64-bit ids), or
SQLite where PostgreSQL is not installed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from bus.broker import Mosquitto, free_port
from hub import HubSettings, create_app
from tests.integration.hub.postgres import PostgresCluster, PostgresUnavailable
from tests.integration.hub.support import codec, event
from tests.integration.hub.test_auth import OPEN as OPEN_ROUTES
from wire import Severity

pytestmark = pytest.mark.integration

ADMIN = "fuzz-admin"
PASSWORD = "fuzz admin password"
# Open by nature: the health probe, the doors one logs in through, the public warnings' feed.
# One list for both tests: the route walk in test_auth.py keeps it.
OPEN = OPEN_ROUTES
# Bounded: about 20 operations x 2 tests x this many examples stays well inside 90 s.
# ANMIN_FUZZ_EXAMPLES=500 searches harder, by hand.
MAX_EXAMPLES = int(os.environ.get("ANMIN_FUZZ_EXAMPLES", "15"))
# Without credentials every request stops at the door: fewer examples show it as well.
MAX_EXAMPLES_NO_CREDENTIALS = max(1, MAX_EXAMPLES // 3)

# The schema does not depend on where the hub runs: take it from an app built with auth on.
schema = schemathesis.openapi.from_dict(create_app(HubSettings(auth_required=True)).openapi())


@dataclass
class RunningHub:
    url: str
    headers: dict[str, str]
    database_url: str


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub server with auth on, an administrator, a resident and an incident to aim at."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with ExitStack() as stack:
        database_url = f"sqlite:///{tmp / 'hub.sqlite3'}"
        try:
            postgres = stack.enter_context(PostgresCluster())
            database_url = postgres.create_database("fuzz")
        except PostgresUnavailable:
            pass
        yield from _hub(tmp, database_url)


def _hub(tmp: Path, database_url: str) -> Iterator[RunningHub]:
    broker = Mosquitto(data_dir=tmp / "mosquitto")
    broker.start()
    port = free_port()
    hub_settings = HubSettings(
        broker=broker.broker,
        database_url=database_url,
        http_port=port,
        auth_required=True,
        jwt_secret="fuzz-secret-of-enough-length-for-hs256",
        admin_username=ADMIN,
        admin_password=PASSWORD,
        timer_interval_s=3600.0,
    )
    config = uvicorn.Config(
        create_app(hub_settings), host="127.0.0.1", port=port, lifespan="on", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fuzzed hub", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the hub did not start within 30 s")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            token = client.post(
                "/api/v1/auth/token", json={"username": ADMIN, "password": PASSWORD}
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            resident = client.post(
                "/api/v1/residents",
                json={"name": "Grandma Li", "site": "s1", "building": "3", "unit": "301"},
                headers=headers,
            )
            assert resident.status_code == 201, resident.text
            for e in (
                event(datetime.now(UTC), kind="fall"),
                event(datetime.now(UTC), building="4", unit="401", severity=Severity.EXTREME),
            ):
                sent = client.post("/api/v1/events", content=codec.encode(e), headers=headers)
                assert sent.status_code == 200, sent.text
        yield RunningHub(url=url, headers=headers, database_url=database_url)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        broker.close()


def _streams(case: schemathesis.Case[Any]) -> bool:
    # The incident stream never ends by design; only its refusal without credentials is checked.
    path: str = case.operation.path
    return path.startswith("/api/v1/stream/")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
)
def test_no_server_error_as_admin(case: schemathesis.Case[Any], hub: RunningHub) -> None:
    if _streams(case):
        pytest.skip("an endless event stream")
    response = case.call(base_url=hub.url, headers=hub.headers, timeout=30)
    assert response.status_code < 500, (
        f"{case.operation.method.upper()} {case.operation.path} -> {response.status_code}: "
        f"{response.text[:300]}\n{case.as_curl_command()}"
    )


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES_NO_CREDENTIALS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
)
def test_nothing_succeeds_without_credentials(
    case: schemathesis.Case[Any], hub: RunningHub
) -> None:
    if case.headers:
        # Whatever the generator put in Authorization, this request carries no credentials.
        case.headers.pop("Authorization", None)
    response = case.call(base_url=hub.url, timeout=30)
    where = f"{case.operation.method.upper()} {case.operation.path}"
    assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
    if (case.operation.method.upper(), case.operation.path) in OPEN:
        return
    # 401 as a rule; a body too malformed to read is refused (422) before anyone is asked.
    assert not 200 <= response.status_code < 300, (
        f"{where} answered {response.status_code} without credentials: {response.text[:300]}"
    )


BIG = 2**63  # past any database integer: once a 500 from the driver, now refused as input
TOO_BIG = [
    f"/api/alerts?offset={BIG}",
    f"/api/v1/incidents?offset={BIG}",
    f"/api/v1/audit?after_id={BIG}",
    f"/api/broadcasts?offset={BIG}",
]


@pytest.mark.parametrize("url", TOO_BIG)
def test_too_big_numbers_are_bad_input(url: str, hub: RunningHub) -> None:
    """What schemathesis found: offsets and ids past the database's integers gave a 500."""
    with httpx.Client(base_url=hub.url, headers=hub.headers, timeout=30) as client:
        assert client.get(url).status_code == 422
        linked = client.put(f"/api/v1/people/{BIG}/relatives/{BIG}")
        assert linked.status_code == 422, linked.text


def test_nul_characters_are_bad_input(hub: RunningHub) -> None:
    """What schemathesis found on PostgreSQL: text with NUL gave a 503 from the driver."""
    resident = {"name": "a\x00b", "site": "s1", "building": "3", "unit": "301"}
    with httpx.Client(base_url=hub.url, headers=hub.headers, timeout=30) as client:
        assert client.post("/api/v1/residents", json=resident).status_code == 422
        assert client.get("/api/v1/people", params={"role": "a\x00b"}).status_code == 422
        assert client.get("/api/v1/incidents/a%00b").status_code == 422
        login = {"username": "a\x00b", "password": "x"}
        assert client.post("/api/v1/auth/token", json=login).status_code == 422


def test_nul_in_a_broadcast_query_is_bad_input(hub: RunningHub) -> None:
    """Found with ANMIN_FUZZ_EXAMPLES=150 on PostgreSQL: a NUL in ?state= gave a 503."""
    with httpx.Client(base_url=hub.url, headers=hub.headers, timeout=30) as client:
        assert client.get("/api/v1/broadcasts", params={"state": "a\x00b"}).status_code == 422
