"""Web Push to families' phones: VAPID keys, stored subscriptions, a notice when an incident
about their relative opens.

Keys: ``python -m hub.push keys data/vapid.pem`` writes a P-256 private key (PEM) and prints
the public key browsers subscribe with; the hub reads the file named by ``ANMIN_HUB_VAPID_KEY``
(and ``ANMIN_HUB_VAPID_SUBJECT``, a ``mailto:`` or ``https:`` contact the push services may
use). Without a key, push is off and the family page says so.

Sending: a task in each hub tails the audit log for ``incident.opened``; for each family member
linked to a resident of the incident's unit, each of their subscriptions is *claimed* by moving
its ``last_audit_id`` forward in one UPDATE (only one hub succeeds), then sent with pywebpush
(RFC 8291 encryption, RFC 8292 VAPID: ``vapid t=..., k=...``). A subscription the push service
says is gone (404, 410) is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02, VapidException  # type: ignore[import-untyped]  # no stubs
from pywebpush import WebPushException, webpush  # type: ignore[import-untyped]
from sqlalchemy import delete, func, select, update

from hub.clock import Clock
from hub.directory import family_of
from hub.errors import HubError, StoreError
from hub.incidents import IncidentRecord
from hub.store import Store
from hub.tables import AuditRow, WebPushSubscriptionRow

log = logging.getLogger(__name__)

POLL_S = 0.5
GONE = (404, 410)


class PushError(HubError):
    """Web Push is misconfigured (no or a bad VAPID key)."""


@dataclass(frozen=True, slots=True)
class Vapid:
    """The hub's VAPID identity."""

    key: Vapid02
    subject: str

    @property
    def public_key(self) -> str:
        """The application server key, base64url without padding, as browsers want it."""
        raw = self.key.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Vapid | None:
        env = os.environ if env is None else env
        path = env.get("ANMIN_HUB_VAPID_KEY")
        if not path:
            return None
        return cls.load(Path(path), env.get("ANMIN_HUB_VAPID_SUBJECT", "mailto:hub@anmin.invalid"))

    @classmethod
    def load(cls, path: Path, subject: str) -> Vapid:
        try:
            key = Vapid02.from_file(str(path))
        except (OSError, ValueError, VapidException) as exc:
            raise PushError(
                f"ANMIN_HUB_VAPID_KEY={path}: not a readable VAPID private key ({exc}); "
                f"make one with 'python -m hub.push keys {path}'"
            ) from exc
        if not subject.startswith(("mailto:", "https:")):
            raise PushError(
                f"ANMIN_HUB_VAPID_SUBJECT={subject!r} must start with mailto: or https:"
            )
        return cls(key, subject)


def generate(path: Path) -> Vapid:
    """A new VAPID key pair, the private key written to ``path`` (PEM, mode 0600)."""
    key = Vapid02()
    key.generate_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_pem())
    path.chmod(0o600)
    return Vapid(key, "mailto:hub@anmin.invalid")


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: str
    auth: str

    @classmethod
    def parse(cls, body: Any) -> Subscription:
        """A browser's ``PushSubscription.toJSON()``; ``ValueError`` saying what is wrong."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object with endpoint and keys")
        endpoint, keys = body.get("endpoint"), body.get("keys")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise ValueError("endpoint must be an http(s) URL")
        if len(endpoint) > 1024:
            raise ValueError("endpoint is longer than 1024 characters")
        if not isinstance(keys, dict):
            raise ValueError("keys must be an object with p256dh and auth")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        for name, value, longest in (("p256dh", p256dh, 128), ("auth", auth, 64)):
            if not isinstance(value, str) or not 0 < len(value) <= longest:
                raise ValueError(f"keys.{name} must be a base64url string")
        return cls(endpoint, str(p256dh), str(auth))


def save_subscription(store: Store, person_id: int, sub: Subscription, now: datetime) -> None:
    """Store (or move to this person) a browser's subscription; it gets pushes from now on."""
    with store.writing() as session:
        row = session.scalar(
            select(WebPushSubscriptionRow).where(WebPushSubscriptionRow.endpoint == sub.endpoint)
        )
        # Incidents opened before it subscribed are not pushed to it.
        latest = session.scalar(select(func.max(AuditRow.id))) or 0
        if row is None:
            session.add(
                WebPushSubscriptionRow(
                    person_id=person_id,
                    endpoint=sub.endpoint,
                    p256dh=sub.p256dh,
                    auth=sub.auth,
                    created_at=now,
                    last_audit_id=latest,
                )
            )
        else:
            row.person_id = person_id
            row.p256dh = sub.p256dh
            row.auth = sub.auth


def subscriptions_of(store: Store, person_id: int) -> list[str]:
    with store.reading() as session:
        return list(
            session.scalars(
                select(WebPushSubscriptionRow.endpoint).where(
                    WebPushSubscriptionRow.person_id == person_id
                )
            )
        )


class Pusher:
    """Tails the audit log and pushes each opened incident to its family's subscriptions."""

    def __init__(
        self,
        store: Store,
        vapid: Vapid,
        *,
        clock: Clock,
        describe: Callable[[IncidentRecord], tuple[str, str]] | None = None,
        timeout_s: float = 10,
    ) -> None:
        self.store = store
        self.describe = describe or (lambda i: (i.kind, i.message))
        self.vapid = vapid
        self.clock = clock
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        after = await asyncio.to_thread(self.store.latest_audit_id)
        while True:
            try:
                lines = await asyncio.to_thread(
                    partial(self.store.audit, after_id=after, limit=200)
                )
            except StoreError:
                lines = []  # the database is away: try again
            for line in lines:
                after = line.id
                if line.action == "incident.opened" and line.subject_type == "incident":
                    try:
                        await self.push_incident(line.id, line.subject_id)
                    except StoreError:
                        log.warning("web push for incident %s skipped: database error", line.id)
            if not lines:
                await asyncio.sleep(POLL_S)

    async def push_incident(self, audit_id: int, incident_id: str) -> int:
        """Send the notice to every subscription of the incident's family; how many were sent."""
        targets = await asyncio.to_thread(self._claim, audit_id, incident_id)
        sent = 0
        for sub_id, info, payload in targets:
            if await asyncio.to_thread(self._send, sub_id, info, payload):
                sent += 1
        return sent

    def _claim(self, audit_id: int, incident_id: str) -> list[tuple[int, dict[str, Any], str]]:
        incident = self.store.incident(incident_id)
        if incident is None:
            return []
        title, text = self.describe(incident)
        payload = json.dumps(
            {
                "title": title,
                "text": text,
                "incident": incident.id,
                "kind": incident.kind,
                "severity": incident.severity,
                "building": incident.building,
                "unit": incident.unit,
                "message": incident.message,
                "url": f"/console/incidents/{incident.id}",
            },
            ensure_ascii=False,
        )
        claimed: list[tuple[int, dict[str, Any], str]] = []
        with self.store.writing() as session:
            people = family_of(session, incident.site, incident.building, incident.unit)
            if not people:
                return []
            rows = session.scalars(
                select(WebPushSubscriptionRow).where(WebPushSubscriptionRow.person_id.in_(people))
            ).all()
            for row in rows:
                # Only the hub whose UPDATE moves the mark sends it: once across hubs.
                result = session.execute(
                    update(WebPushSubscriptionRow)
                    .where(WebPushSubscriptionRow.id == row.id)
                    .where(WebPushSubscriptionRow.last_audit_id < audit_id)
                    .values(last_audit_id=audit_id)
                )
                if getattr(result, "rowcount", 0) == 1:
                    info = {
                        "endpoint": row.endpoint,
                        "keys": {"p256dh": row.p256dh, "auth": row.auth},
                    }
                    claimed.append((row.id, info, payload))
        return claimed

    def _send(self, sub_id: int, info: dict[str, Any], payload: str) -> bool:
        try:
            webpush(
                info,
                payload,
                vapid_private_key=self.vapid.key,
                vapid_claims={"sub": self.vapid.subject},
                timeout=self.timeout_s,
                ttl=3600,
                headers={"Urgency": "high"},
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            self.failed += 1
            if status in GONE:
                with self.store.writing() as session:
                    session.execute(
                        delete(WebPushSubscriptionRow).where(WebPushSubscriptionRow.id == sub_id)
                    )
                log.info("web push subscription %s is gone (%s): deleted", sub_id, status)
            else:
                log.warning("web push to subscription %s failed: %s", sub_id, exc)
            return False
        except OSError as exc:
            self.failed += 1
            log.warning("web push to subscription %s failed: %s", sub_id, exc)
            return False
        self.sent += 1
        return True


def main(argv: list[str] | None = None) -> int:
    """``python -m hub.push keys PATH``: make a VAPID key pair, print the public key."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "keys":
        sys.stderr.write("usage: python -m hub.push keys PATH  (writes a VAPID private key)\n")
        return 2
    path = Path(args[1])
    if path.exists():
        sys.stderr.write(f"{path} exists; not overwriting a key browsers may have subscribed to\n")
        return 1
    vapid = generate(path)
    sys.stdout.write(
        f"wrote {path}\npublic key (applicationServerKey): {vapid.public_key}\n"
        f"set ANMIN_HUB_VAPID_KEY={path} and ANMIN_HUB_VAPID_SUBJECT=mailto:you@example.org\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
