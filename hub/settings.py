"""The hub's settings: one frozen object, built in code or from environment variables."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from ANMIN_* variables; anything unset keeps its default.

        ANMIN_HUB_DB, ANMIN_BROKER_HOST, ANMIN_BROKER_PORT, ANMIN_BROKER_USERNAME,
        ANMIN_BROKER_PASSWORD, ANMIN_HUB_CLIENT_ID, ANMIN_HUB_SHARED, ANMIN_HUB_HOST,
        ANMIN_HUB_PORT.
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
        )
