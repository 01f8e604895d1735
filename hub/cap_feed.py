"""CAP in and out: the site's Atom feed of public warnings, and outside authorities' alerts.

Out: ``atom`` renders a site's public warnings (Actual, scope Public, sent) as an Atom feed,
each entry linking to its CAP 1.2 XML, the shape CAP aggregators poll.

In: ``CapIntake.receive`` takes a CAP alert from an outside authority (a city's weather or
earthquake warning), by POST or from a polled Atom feed (``FeedPoller``), parses it with
``wire.cap``, and relays it to the site's speakers when the ``RelayPolicy`` says so: an Actual
Alert of a listed severity and urgency at once; an Update or Cancel of an alert we relayed
always (to the same speakers); anything else is recorded as ``held`` for staff to read, and
what does not parse is ``refused`` with the reason. Each is recorded once (``cap_intake``,
unique on site, sender, identifier and sent) and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin
from xml.etree import ElementTree as ET

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub import broadcast_rows as rows
from hub.broadcasting import Broadcaster
from hub.clock import Clock, utc_now
from hub.errors import HubError, StoreError
from hub.incidents import audit
from hub.store import Store
from hub.tables import BroadcastRow, CapIntakeRow
from wire import Broadcast, WireError, cap, uuid7

log = logging.getLogger(__name__)

ATOM = "http://www.w3.org/2005/Atom"
CAP_MEDIA_TYPE = "application/cap+xml"
MAX_FEED_BYTES = 1024 * 1024
MAX_WIRE_CAP = 32768  # wire.Broadcast.cap's limit
RELAYED, HELD, REFUSED, DUPLICATE = "relayed", "held", "refused", "duplicate"
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """Which outside alerts reach the speakers at once."""

    statuses: frozenset[str] = frozenset({"Actual"})
    severities: frozenset[str] = frozenset({"Extreme", "Severe"})
    urgencies: frozenset[str] = frozenset({"Immediate", "Expected"})
    validity: timedelta = timedelta(hours=1)  # when the alert gives no expiry
    repeat: int = 2


@dataclass(frozen=True, slots=True)
class IntakeResult:
    id: int | None
    decision: str
    reason: str
    broadcast_id: str | None
    sender: str
    identifier: str


# -- out: the Atom feed -----------------------------------------------------------------------


def _atom_time(at: datetime) -> str:
    return cap.cap_time(at, "atom time")


def atom(
    site: str, found: Sequence[BroadcastRow], *, feed_url: str, entry_url: str, now: datetime
) -> bytes:
    """The Atom feed (RFC 4287) of a site's public warnings; ``entry_url`` has ``{id}``."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        node = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        node.text = text
        return node

    sub(feed, "id", f"urn:anmin:{site}:cap")
    sub(feed, "title", f"Anmin {site}: public warnings (CAP 1.2)")
    sub(feed, "updated", _atom_time(found[0].created_at if found else now))
    sub(feed, "link", rel="self", href=feed_url, type="application/atom+xml")
    author = sub(feed, "author")
    sub(author, "name", f"anmin@{site}")
    for row in found:
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:uuid:{row.id}")
        sub(entry, "title", row.headline or row.msg_type)
        sub(entry, "updated", _atom_time(row.published_at or row.created_at))
        sub(entry, "published", _atom_time(row.created_at))
        sub(entry, "summary", row.text)
        sub(entry, "category", term=row.severity, label="severity")
        sub(entry, "category", term=row.msg_type, label="msgType")
        sub(entry, "link", rel="alternate", type=CAP_MEDIA_TYPE, href=entry_url.format(id=row.id))
    body = ET.tostring(feed, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


# -- in: outside authorities --------------------------------------------------------------------


def _language(value: str) -> str:
    if _LANGUAGE.match(value):
        return value
    primary = value.split("-")[0].lower()
    return primary if _LANGUAGE.match(primary) else "zh-CN"


class CapIntake:
    """Outside CAP alerts into the store. Blocking: call through ``asyncio.to_thread``."""

    def __init__(self, store: Store, policy: RelayPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or RelayPolicy()
        self.counters: Counter[str] = Counter()

    def receive(
        self, xml: bytes, *, site: str, source: str, actor: str, now: datetime
    ) -> IntakeResult:
        try:
            alert = cap.parse(xml)
        except WireError as exc:
            self.counters[REFUSED] += 1
            self.store.append_audit(
                now, actor, "cap.refused", "cap", "-", site=site, source=source, reason=exc.detail
            )
            return IntakeResult(None, REFUSED, exc.detail, None, "", "")
        text = xml.decode("utf-8-sig")  # parse() has checked it is UTF-8
        sent = cap.cap_time(alert.sent, "sent")
        try:
            with self.store.writing() as session:
                earlier = session.scalar(
                    select(CapIntakeRow).where(
                        CapIntakeRow.site == site,
                        CapIntakeRow.sender == alert.sender,
                        CapIntakeRow.identifier == alert.identifier,
                        CapIntakeRow.sent == sent,
                    )
                )
                if earlier is not None:
                    self.counters[DUPLICATE] += 1
                    return IntakeResult(
                        earlier.id,
                        DUPLICATE,
                        f"already received ({earlier.decision})",
                        earlier.broadcast_id,
                        alert.sender,
                        alert.identifier,
                    )
                decision, reason, broadcast = self._decide(session, alert, text, site, now)
                broadcast_id = None
                if broadcast is not None:
                    row, refers_to = broadcast
                    session.add(row)
                    broadcast_id = row.id
                    rows.add_targets(session, row, now, self.store.redelivery)
                    if refers_to is not None:
                        refers_to.superseded_by = row.id
                        rows.stop_redelivery(session, refers_to.id)
                    audit(
                        session,
                        now,
                        actor,
                        "broadcast.relayed",
                        "broadcast",
                        row.id,
                        site=site,
                        sender=alert.sender,
                        identifier=alert.identifier,
                        source=source,
                    )
                intake = CapIntakeRow(
                    site=site,
                    source=source[:512],
                    sender=alert.sender[:256],
                    identifier=alert.identifier[:256],
                    sent=sent,
                    received_at=now,
                    decision=decision,
                    reason=reason[:512],
                    broadcast_id=broadcast_id,
                    xml=text,
                )
                session.add(intake)
                session.flush()
                audit(
                    session,
                    now,
                    actor,
                    f"cap.{decision}",
                    "cap",
                    str(intake.id),
                    site=site,
                    sender=alert.sender,
                    identifier=alert.identifier,
                    reason=reason,
                    source=source,
                )
                self.counters[decision] += 1
                return IntakeResult(
                    intake.id, decision, reason, broadcast_id, alert.sender, alert.identifier
                )
        except IntegrityError:
            # Another hub (or feed poll) recorded the same alert at the same moment.
            self.counters[DUPLICATE] += 1
            return IntakeResult(
                None, DUPLICATE, "already received", None, alert.sender, alert.identifier
            )

    def _decide(
        self, session: Any, alert: cap.CapAlert, text: str, site: str, now: datetime
    ) -> tuple[str, str, tuple[BroadcastRow, BroadcastRow | None] | None]:
        try:
            relay = cap.relay_fields(alert)
        except WireError as exc:
            return REFUSED, exc.detail, None
        if relay.status not in self.policy.statuses:
            return HELD, f"status {relay.status} is not relayed (policy)", None
        if relay.expires is not None and relay.expires <= now:
            return REFUSED, f"expired at {relay.expires.isoformat()}", None
        if len(text) > MAX_WIRE_CAP:
            return REFUSED, f"the CAP is {len(text)} characters; speakers take {MAX_WIRE_CAP}", None
        earlier: BroadcastRow | None = None
        if relay.msg_type in ("Update", "Cancel"):
            names = {ref.identifier for ref in relay.references}
            relayed = session.scalar(
                select(CapIntakeRow)
                .where(
                    CapIntakeRow.site == site,
                    CapIntakeRow.decision == RELAYED,
                    CapIntakeRow.identifier.in_(names or {""}),
                )
                .order_by(CapIntakeRow.id.desc())
            )
            if relayed is None or relayed.broadcast_id is None:
                return HELD, f"a {relay.msg_type} of nothing relayed here", None
            earlier = session.get(BroadcastRow, relayed.broadcast_id)
            if earlier is None:
                return HELD, f"a {relay.msg_type} of nothing relayed here", None
            if earlier.superseded_by is not None:
                # Relay it anyway against the newest: the speakers match the CAP references.
                newest = session.get(BroadcastRow, earlier.superseded_by)
                earlier = newest or earlier
        else:
            info = next((i for i in alert.infos if i.language == relay.language), None)
            urgency = info.urgency if info is not None else "Unknown"
            if relay.severity.value not in self.policy.severities:
                return (
                    HELD,
                    f"severity {relay.severity.value} is not relayed at once (policy)",
                    None,
                )
            if urgency not in self.policy.urgencies:
                return HELD, f"urgency {urgency} is not relayed at once (policy)", None
        headline = relay.headline or relay.text[:80] or relay.msg_type
        broadcast = Broadcast(
            id=uuid7(int(now.timestamp() * 1000)),
            site=site,
            ts=now,
            status=relay.status,
            msg_type=relay.msg_type,
            severity=relay.severity,
            headline=headline[:256],
            text=relay.text[:4096],
            language=_language(relay.language),
            buildings=list(earlier.buildings) if earlier is not None else [],
            repeat=1 if relay.msg_type == "Cancel" else self.policy.repeat,
            expires=relay.expires or now + self.policy.validity,
            cap=text,
        )
        row = rows.new_row(
            broadcast,
            now,
            origin="relay",
            state=rows.APPROVED,
            scope=alert.scope if alert.scope in ("Public", "Restricted") else "Restricted",
            approved_by="policy:cap-relay",
            refers_to=earlier.id if earlier is not None else None,
            spec={
                "sender": alert.sender,
                "identifier": alert.identifier,
                "sent": alert.sent.isoformat(),
            },
        )
        reason = f"{relay.msg_type} {relay.severity.value} relayed to the whole site"
        if earlier is not None:
            reason = f"{relay.msg_type} of broadcast {earlier.id}, to the same speakers"
        return RELAYED, reason, (row, earlier)

    def records(self, limit: int = 100) -> list[CapIntakeRow]:
        query = select(CapIntakeRow).order_by(CapIntakeRow.id.desc()).limit(limit)
        with self.store.reading() as session:
            found = list(session.scalars(query))
            for row in found:
                session.expunge(row)
            return found


# -- polling an outside Atom feed ---------------------------------------------------------------


class FeedError(HubError):
    """An outside feed we cannot read."""


def _safe_xml(body: bytes, what: str) -> ET.Element:
    if len(body) > MAX_FEED_BYTES:
        raise FeedError(f"{what} is {len(body)} bytes; at most {MAX_FEED_BYTES} read")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FeedError(f"{what} is not UTF-8: {exc}") from exc
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise FeedError(f"{what} carries a DOCTYPE or entities; refused")
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    try:
        return ET.fromstring(text)  # noqa: S314  # DOCTYPE refused above: no entities
    except ET.ParseError as exc:
        raise FeedError(f"{what} is not well-formed XML: {exc}") from exc


@dataclass(frozen=True, slots=True)
class FeedEntry:
    key: str  # entry id + updated: a changed entry is read again
    cap_url: str | None
    inline: bytes | None


def feed_entries(body: bytes, feed_url: str) -> list[FeedEntry]:
    """The CAP alerts an Atom feed lists: a link to the CAP XML, or the alert inline."""
    root = _safe_xml(body, f"feed {feed_url}")
    if root.tag != f"{{{ATOM}}}feed":
        raise FeedError(f"feed {feed_url}: the root is {root.tag}, not an Atom <feed>")
    found = []
    for entry in root.findall(f"{{{ATOM}}}entry"):
        key = "|".join(
            (entry.findtext(f"{{{ATOM}}}{tag}") or "").strip() for tag in ("id", "updated")
        )
        inline = None
        for alert in entry.iter():
            if alert.tag in {f"{{{ns}}}alert" for ns in cap.NS_READ}:
                inline = ET.tostring(alert, encoding="utf-8")
                break
        href = None
        for link in entry.findall(f"{{{ATOM}}}link"):
            kind = link.get("type", "")
            target = link.get("href", "")
            if target and ("cap" in kind or target.endswith(".xml")):
                href = urljoin(feed_url, target)
                break
        if inline is not None or href is not None:
            found.append(FeedEntry(key, href, inline))
    return found


class FeedPoller:
    """Polls outside authorities' Atom feeds and hands each new CAP alert to the intake."""

    def __init__(
        self,
        intake: CapIntake,
        broadcaster: Broadcaster,
        urls: Sequence[str],
        site: str,
        *,
        every_s: float = 60.0,
        clock: Clock = utc_now,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.intake = intake
        self.broadcaster = broadcaster
        self.urls = list(urls)
        self.site = site
        self.every_s = every_s
        self.clock = clock
        self.client = client or httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        self.counters: Counter[str] = Counter()
        self._seen: set[str] = set()

    async def poll(self) -> list[IntakeResult]:
        """One pass over every feed. Never raises (except cancellation)."""
        results = []
        for url in self.urls:
            try:
                response = await self.client.get(url)
                response.raise_for_status()
                entries = feed_entries(response.content, url)
                for entry in entries:
                    if entry.key in self._seen:
                        continue
                    body = entry.inline
                    if body is None and entry.cap_url is not None:
                        cap_response = await self.client.get(entry.cap_url)
                        cap_response.raise_for_status()
                        body = cap_response.content
                    if body is None:
                        continue
                    result = await asyncio.to_thread(
                        self.intake.receive,
                        body,
                        site=self.site,
                        source=url,
                        actor="feed",
                        now=self.clock(),
                    )
                    self._seen.add(entry.key)
                    results.append(result)
                    if result.decision == RELAYED and result.broadcast_id is not None:
                        await self.broadcaster.send(result.broadcast_id)
                self.counters["polls"] += 1
            except (httpx.HTTPError, FeedError, StoreError) as exc:
                self.counters["errors"] += 1
                log.warning("CAP feed %s: %s", url, exc)
            except Exception:
                self.counters["errors"] += 1
                log.exception("CAP feed %s: unexpected failure", url)
        return results

    async def run(self) -> None:
        while True:
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(self.every_s)

    async def aclose(self) -> None:
        await self.client.aclose()
