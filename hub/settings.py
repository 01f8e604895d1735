"""The hub's settings: one frozen object, built in code or from environment variables."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bus import Broker
from bus.mqtt import Tls

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


def _days(value: str, name: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number of days") from None
    if not days > 0:
        raise ValueError(f"{name}={value!r}: a retention period is a positive number of days")
    return days


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{name}={port} is not a port number (0-65535)")
    return port


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the hub keeps each record before the purge job (hub/retention.py) deletes it.

    Defaults a residents' committee can defend (docs/security.md): a year of alerts, incidents
    and speaker receipts for review; life-safety incidents (fire, gas, CO, SOS, falls, anything
    Extreme) and their events five years, as the record of what happened and who answered;
    notification deliveries (who was told, by which channel) and dead-letter counts 90 days.
    Open or acknowledged incidents are never purged. The audit log is kept (see there).
    """

    alert_days: float = 365.0
    incident_days: float = 365.0
    life_safety_days: float = 5 * 365.0
    delivery_days: float = 90.0
    dead_letter_days: float = 90.0
    receipt_days: float = 365.0
    # How often the purge job runs.
    interval_s: float = 3600.0


# Retention fields and the variables that override them.
RETENTION_ENV = {
    "alert_days": "ANMIN_HUB_RETAIN_ALERT_DAYS",
    "incident_days": "ANMIN_HUB_RETAIN_INCIDENT_DAYS",
    "life_safety_days": "ANMIN_HUB_RETAIN_LIFE_SAFETY_DAYS",
    "delivery_days": "ANMIN_HUB_RETAIN_DELIVERY_DAYS",
    "dead_letter_days": "ANMIN_HUB_RETAIN_DEAD_LETTER_DAYS",
    "receipt_days": "ANMIN_HUB_RETAIN_RECEIPT_DAYS",
}


def _retention(env: Mapping[str, str]) -> Retention:
    days = {field: _days(env[name], name) for field, name in RETENTION_ENV.items() if name in env}
    return Retention(**days)


def _read_secret(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(
            f"{name}={path!r}: cannot read the password file ({exc.strerror})"
        ) from None


def _broker(env: Mapping[str, str]) -> Broker:
    """The hub's broker: host, port, user (``anmin-hub``), password or password file, TLS."""
    default = Broker()
    password = env.get("ANMIN_BROKER_PASSWORD") or None
    if env.get("ANMIN_BROKER_PASSWORD_FILE"):
        password = _read_secret(env["ANMIN_BROKER_PASSWORD_FILE"], "ANMIN_BROKER_PASSWORD_FILE")
    ca_file = env.get("ANMIN_BROKER_CA_FILE") or None
    cert_file = env.get("ANMIN_BROKER_CERT_FILE") or None
    key_file = env.get("ANMIN_BROKER_KEY_FILE") or None
    if key_file and not cert_file:
        raise ValueError("ANMIN_BROKER_KEY_FILE is set without ANMIN_BROKER_CERT_FILE; set both")
    tls_wanted = (
        _flag(env["ANMIN_BROKER_TLS"], "ANMIN_BROKER_TLS")
        if "ANMIN_BROKER_TLS" in env
        else bool(ca_file or cert_file)
    )
    for name, path in (
        ("ANMIN_BROKER_CA_FILE", ca_file),
        ("ANMIN_BROKER_CERT_FILE", cert_file),
        ("ANMIN_BROKER_KEY_FILE", key_file),
    ):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{name}={path!r}: no such file (give the path of a PEM file)")
    return Broker(
        host=env.get("ANMIN_BROKER_HOST", default.host),
        port=_port(env["ANMIN_BROKER_PORT"], "ANMIN_BROKER_PORT")
        if "ANMIN_BROKER_PORT" in env
        else (8883 if tls_wanted else default.port),
        username=env.get("ANMIN_BROKER_USERNAME") or None,
        password=password,
        tls=Tls(ca_file=ca_file, cert_file=cert_file, key_file=key_file) if tls_wanted else None,
    )


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
    # Concurrent intake batches (one gateway's messages are in one batch at a time, in order).
    # Each batch takes everything waiting, so a few suffice: measured on 2 cores, PostgreSQL,
    # 2 hubs, 2 workers stored 3,500-4,600 events/s; 16 stored 2,800-3,700 (docs/hub.md).
    intake_workers: int = 2
    # How often the escalation, delivery and gateway timers are checked.
    timer_interval_s: float = 1.0
    # A gateway silent this long is stale; offline (or stale) this much longer is an incident.
    gateway_stale_after_s: float = 180.0
    gateway_grace_s: float = 120.0
    # Broadcasts (docs/broadcast.md): speakers that have not confirmed are retried after
    # broadcast_retry_s, doubling, at most broadcast_retries times per gateway; outside CAP
    # alerts are polled from cap_feed_urls (Atom) and relayed to cap_feed_site's speakers.
    broadcast_retry_s: float = 5.0
    broadcast_retries: int = 8
    broadcast_tick_s: float = 1.0
    cap_feed_urls: tuple[str, ...] = ()
    cap_feed_site: str | None = None
    cap_feed_poll_s: float = 60.0
    # Outside Actual alerts of these severities and urgencies reach the speakers at once.
    cap_relay_severities: tuple[str, ...] = ("Extreme", "Severe")
    cap_relay_urgencies: tuple[str, ...] = ("Immediate", "Expected")
    # How long records are kept; the purge job runs every retention.interval_s.
    retention: Retention = field(default_factory=Retention)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from ANMIN_* variables; anything unset keeps its default.

        ANMIN_HUB_DB, ANMIN_BROKER_HOST, ANMIN_BROKER_PORT, ANMIN_BROKER_USERNAME,
        ANMIN_BROKER_PASSWORD, ANMIN_HUB_CLIENT_ID, ANMIN_HUB_SHARED, ANMIN_HUB_HOST,
        ANMIN_HUB_PORT, ANMIN_HUB_AUTH, ANMIN_HUB_JWT_SECRET, ANMIN_HUB_ADMIN,
        ANMIN_HUB_ADMIN_PASSWORD, ANMIN_HUB_POLICY.

        The broker over TLS: ANMIN_BROKER_CA_FILE (the site CA), ANMIN_BROKER_CERT_FILE and
        ANMIN_BROKER_KEY_FILE (a client certificate, where the broker asks for one),
        ANMIN_BROKER_TLS (default: on when a CA or certificate is given; the port then
        defaults to 8883), and ANMIN_BROKER_PASSWORD_FILE (the password of ANMIN_BROKER_USERNAME,
        normally ``anmin-hub``, read from a file so it is not in the environment).

        Retention in days: ANMIN_HUB_RETAIN_{ALERT,INCIDENT,LIFE_SAFETY,DELIVERY,DEAD_LETTER,
        RECEIPT}_DAYS.
        """
        env = os.environ if env is None else env
        broker = _broker(env)
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
            cap_feed_urls=tuple(env.get("ANMIN_HUB_CAP_FEEDS", "").split()),
            cap_feed_site=env.get("ANMIN_HUB_CAP_FEED_SITE") or None,
            retention=_retention(env),
        )
