"""The hub's settings: one frozen object, built in code or from environment variables."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bus import Broker

# Relative to the working directory; a deployment sets ANMIN_HUB_DB to an absolute URL.
DEFAULT_DATABASE_URL = "sqlite:///data/hub.sqlite3"


def random_client_id() -> str:
    # Unique per process: two hub workers with one client id would keep kicking each other off.
    return f"anmin-hub-{secrets.token_hex(3)}"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a yes/no value (use 1/0, true/false, yes/no)")


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{name}={port} is not a port number (0-65535)")
    return port


@dataclass(frozen=True, slots=True)
class HubSettings:
    broker: Broker = field(default_factory=Broker)
    database_url: str = DEFAULT_DATABASE_URL
    client_id: str = field(default_factory=random_client_id)
    # Shared subscriptions let several hub workers split the gateways' messages.
    shared_subscription: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Every endpoint but /health needs a bearer token. Only a demo or a test on loopback turns
    # this off; then every request acts as an administrator called "anonymous".
    auth_required: bool = True
    # Tokens are HS256-signed with this secret. Several hubs behind one load balancer must
    # share it (ANMIN_HUB_JWT_SECRET); the default is random per process.
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    token_ttl_s: int = 3600
    # Created at startup when nobody exists yet, so that someone can log in the first time.
    admin_username: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    # Events of one cause this close together are one incident.
    incident_window_s: float = 1800.0
    # The routing policy (YAML); None: nobody is notified (incidents are still recorded).
    routing_policy: Path | None = None
    # Concurrent intake lanes (one gateway's messages always share a lane, in order).
    intake_workers: int = 16
    # How often the escalation, delivery and gateway timers are checked.
    timer_interval_s: float = 1.0
    # A gateway silent this long is stale; offline (or stale) this much longer is an incident.
    gateway_stale_after_s: float = 180.0
    gateway_grace_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from ANMIN_* variables; anything unset keeps its default.

        ANMIN_HUB_DB, ANMIN_BROKER_HOST, ANMIN_BROKER_PORT, ANMIN_BROKER_USERNAME,
        ANMIN_BROKER_PASSWORD, ANMIN_HUB_CLIENT_ID, ANMIN_HUB_SHARED, ANMIN_HUB_HOST,
        ANMIN_HUB_PORT, ANMIN_HUB_AUTH, ANMIN_HUB_JWT_SECRET, ANMIN_HUB_ADMIN,
        ANMIN_HUB_ADMIN_PASSWORD, ANMIN_HUB_POLICY.
        """
        env = os.environ if env is None else env
        default_broker = Broker()
        broker = Broker(
            host=env.get("ANMIN_BROKER_HOST", default_broker.host),
            port=_port(env["ANMIN_BROKER_PORT"], "ANMIN_BROKER_PORT")
            if "ANMIN_BROKER_PORT" in env
            else default_broker.port,
            username=env.get("ANMIN_BROKER_USERNAME") or None,
            password=env.get("ANMIN_BROKER_PASSWORD") or None,
        )
        defaults = cls(broker=broker)
        return cls(
            broker=broker,
            database_url=env.get("ANMIN_HUB_DB", defaults.database_url),
            client_id=env.get("ANMIN_HUB_CLIENT_ID") or defaults.client_id,
            shared_subscription=_flag(env["ANMIN_HUB_SHARED"], "ANMIN_HUB_SHARED")
            if "ANMIN_HUB_SHARED" in env
            else defaults.shared_subscription,
            http_host=env.get("ANMIN_HUB_HOST", defaults.http_host),
            http_port=_port(env["ANMIN_HUB_PORT"], "ANMIN_HUB_PORT")
            if "ANMIN_HUB_PORT" in env
            else defaults.http_port,
            auth_required=_flag(env["ANMIN_HUB_AUTH"], "ANMIN_HUB_AUTH")
            if "ANMIN_HUB_AUTH" in env
            else defaults.auth_required,
            jwt_secret=env.get("ANMIN_HUB_JWT_SECRET") or defaults.jwt_secret,
            admin_username=env.get("ANMIN_HUB_ADMIN") or None,
            admin_password=env.get("ANMIN_HUB_ADMIN_PASSWORD") or None,
            routing_policy=Path(env["ANMIN_HUB_POLICY"]) if env.get("ANMIN_HUB_POLICY") else None,
        )
