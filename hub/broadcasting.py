"""Broadcasts people compose: CAP 1.2, approval, delivery, coverage, redelivery.

Staff and administrators compose a broadcast (``ComposeRequest``); the hub makes the CAP 1.2
XML with ``wire.cap`` and publishes the ``wire.Broadcast`` on the site's broadcast topic, the
path the automatic warnings take. An Actual broadcast to a whole site waits (``pending``) for
a second, different staff member's approval, unless the proposer gives an emergency override
with a reason. Every attempt, approval, refusal and override is appended to the audit log in
the transaction that does it. Coverage and redelivery are in ``hub.broadcast_rows``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus import BusError
from hub import broadcast_rows as rows
from hub.clock import Clock, utc_now
from hub.errors import HubError, StoreError
from hub.incidents import audit
from hub.intake import Publisher
from hub.policy import sender_for
from hub.store import Store
from hub.tables import BroadcastGatewayRow, BroadcastRow, BroadcastTargetRow
from wire import Broadcast, Severity, WireError, cap, topics, uuid7

log = logging.getLogger(__name__)

# A composed broadcast without an expiry is valid this long (redelivery stops then).
DEFAULT_VALIDITY = timedelta(hours=1)
MAX_VALIDITY = timedelta(days=2)
SUBJECT = "broadcast"

CapStatus = Literal["Actual", "Exercise", "Test"]
CapMsgType = Literal["Alert", "Update", "Cancel"]
CapSeverity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]


# A site or building id as the wire's topics allow it.
WireId = Annotated[str, Field(pattern=f"^{topics.ID_PATTERN}$")]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# Text that may reach the database: PostgreSQL stores no NUL characters (bad input, a 422).
Words = Annotated[str, AfterValidator(_no_nul)]


class BroadcastError(HubError):
    """A broadcast request the hub will not carry out; ``status`` is the HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Text(BaseModel):
    """The words in one language."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    headline: Words = Field(min_length=1, max_length=159)
    description: Words = Field(min_length=1, max_length=4000)
    instruction: Words = Field(default="", max_length=2000)
    event: Words = Field(default="", max_length=128)  # the event's name; the headline if empty


class CancelText(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text_zh: Words = Field(default="", max_length=2000)
    text_en: Words = Field(default="", max_length=2000)


class ComposeRequest(BaseModel):
    """A broadcast as staff compose it (JSON). ``buildings`` empty: the whole site."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    site: WireId
    status: CapStatus = "Actual"
    msg_type: CapMsgType = "Alert"
    references: Words | None = Field(default=None, max_length=36)  # the broadcast replaced
    category: cap.Category = "Safety"
    urgency: cap.Urgency = "Immediate"
    severity: CapSeverity = "Severe"
    certainty: cap.Certainty = "Observed"
    scope: Literal["Public", "Restricted"] = "Public"
    buildings: list[WireId] = Field(default_factory=list, max_length=500)
    area: Words = Field(default="", max_length=256)  # CAP areaDesc; made from buildings if empty
    zh: Text | None = None  # zh-CN: required except for a Cancel
    en: Text | None = None  # en-US, optional
    expires: AwareDatetime | None = None
    repeat: int = Field(default=2, ge=1, le=10)
    # An Actual whole-site broadcast without a second person: only with a reason (audited).
    override_reason: Words | None = Field(default=None, max_length=500)


@dataclass(frozen=True, slots=True)
class BroadcastView:
    id: str
    site: str
    status: str
    msg_type: str
    state: str
    origin: str
    scope: str
    severity: str
    headline: str
    text: str
    language: str
    buildings: list[str]
    repeat: int
    created_at: datetime
    expires: datetime | None
    published_at: datetime | None
    proposed_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    override_reason: str | None
    refers_to: str | None
    superseded_by: str | None
    cause: str | None
    content_hash: str | None
    targeted: int
    confirmed: int


@dataclass(frozen=True, slots=True)
class Preview:
    script: tuple[cap.Announcement, ...]
    content_hash: str
    cap_xml: str
    needs_approval: bool
    targeted: int


def view_of(session: Session, row: BroadcastRow) -> BroadcastView:
    covered = rows.coverage(session, row)
    return BroadcastView(
        id=row.id,
        site=row.site,
        status=row.status,
        msg_type=row.msg_type,
        state=row.state,
        origin=row.origin,
        scope=row.scope,
        severity=row.severity,
        headline=row.headline,
        text=row.text,
        language=row.language,
        buildings=list(row.buildings),
        repeat=row.repeat,
        created_at=row.created_at,
        expires=row.expires,
        published_at=row.published_at,
        proposed_by=row.proposed_by,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        override_reason=row.override_reason,
        refers_to=row.refers_to,
        superseded_by=row.superseded_by,
        cause=row.cause,
        content_hash=row.content_hash,
        targeted=covered.targeted,
        confirmed=covered.confirmed,
    )


def needs_approval(status: str, msg_type: str, buildings: list[str]) -> bool:
    """An Actual warning to a whole site needs a second person. A Cancel never waits: a false
    alarm must be stoppable at once."""
    return status == "Actual" and not buildings and msg_type != "Cancel"


def _area(request: ComposeRequest) -> tuple[str, str]:
    if request.area:
        return request.area, request.area
    if not request.buildings:
        return "全小区", "the whole community"
    names = "、".join(f"{b}号楼" for b in request.buildings)
    return names, "buildings " + ", ".join(request.buildings)


def compose(
    request: ComposeRequest,
    now: datetime,
    earlier: Broadcast | None = None,
    *,
    broadcast_id: str | None = None,
) -> Broadcast:
    """The wire broadcast, with its CAP 1.2, for a request (``earlier``: what an Update or a
    Cancel replaces). Raises ``BroadcastError`` (422) saying what is wrong."""
    now = now.replace(microsecond=0)  # CAP's sent has seconds precision
    zh, en = request.zh, request.en
    if request.msg_type == "Cancel" and zh is None:
        headline = "警报解除"
        zh = Text(
            headline=headline,
            description=f"警报解除：{earlier.headline}。" if earlier else "警报解除。",
        )
        if en is None:
            en = Text(headline="All clear", description="All clear: the warning is cancelled.")
    if zh is None:
        raise BroadcastError(422, "zh: the Chinese text (headline, description) is required")
    expires = request.expires or now + DEFAULT_VALIDITY
    if expires <= now:
        raise BroadcastError(422, "expires: must be in the future")
    if expires > now + MAX_VALIDITY:
        raise BroadcastError(422, f"expires: at most {MAX_VALIDITY.days} days ahead")
    area_zh, area_en = _area(request)
    broadcast = Broadcast(
        id=broadcast_id or uuid7(int(now.timestamp() * 1000)),
        site=request.site,
        ts=now,
        status=request.status,
        msg_type=request.msg_type,
        severity=Severity(request.severity),
        headline=zh.headline,
        text=zh.description,
        language="zh-CN",
        buildings=list(request.buildings),
        repeat=request.repeat,
        expires=expires,
    )
    translations: tuple[cap.InfoText, ...] = ()
    if en is not None:
        translations = (
            cap.InfoText(
                "en-US",
                en.headline,
                en.description,
                en.instruction,
                event=en.event or en.headline,
                area_description=area_en,
            ),
        )
    references: tuple[cap.Reference, ...] = ()
    if earlier is not None:
        references = (cap.Reference(sender_for(earlier.site), earlier.id, earlier.ts),)
    fields = cap.CapFields(
        sender=sender_for(request.site),
        event=zh.event or zh.headline,
        area=cap.Area(area_zh, buildings=tuple(request.buildings)),
        category=request.category,
        urgency=request.urgency,
        certainty=request.certainty,
        scope=request.scope,
        restriction=f"staff of {request.site}" if request.scope == "Restricted" else "",
        references=references,
        instruction=zh.instruction,
        translations=translations,
    )
    try:
        return cap.with_cap(broadcast, fields)
    except WireError as exc:
        raise BroadcastError(422, exc.detail) from exc


class Broadcasts:
    """Composed broadcasts in the store. Blocking: call through ``asyncio.to_thread``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _earlier(self, session: Session, request: ComposeRequest) -> BroadcastRow | None:
        if request.msg_type == "Alert":
            if request.references is not None:
                raise BroadcastError(422, "references: an Alert replaces nothing")
            return None
        if request.references is None:
            raise BroadcastError(
                422, f"references: a {request.msg_type} names the broadcast it replaces"
            )
        row = session.get(BroadcastRow, request.references)
        if row is None or row.site != request.site:
            raise BroadcastError(404, f"references: no broadcast {request.references} here")
        if row.state != rows.SENT and row.state != rows.APPROVED:
            raise BroadcastError(409, f"references: broadcast {row.id} is {row.state}, not sent")
        if row.superseded_by is not None:
            raise BroadcastError(
                409, f"references: broadcast {row.id} was replaced by {row.superseded_by}"
            )
        if request.buildings and sorted(request.buildings) != sorted(row.buildings):
            raise BroadcastError(
                422,
                "buildings: an Update or Cancel goes to the same target set as the "
                "broadcast it replaces; leave buildings empty",
            )
        request.buildings = list(row.buildings)
        return row

    def preview(self, request: ComposeRequest, now: datetime) -> Preview:
        with self.store.reading() as session:
            earlier = self._earlier(session, request)
            broadcast = compose(request, now, rows.wire_broadcast(earlier) if earlier else None)
            targeted = len(rows.candidate_speakers(session, request.site, request.buildings))
        assert broadcast.cap is not None
        return Preview(
            script=cap.script(broadcast),
            content_hash=cap.content_hash(broadcast),
            cap_xml=broadcast.cap,
            needs_approval=needs_approval(request.status, request.msg_type, request.buildings),
            targeted=targeted,
        )

    def refuse(
        self, actor: str, now: datetime, reason: str, *, subject: str = "-", **detail: Any
    ) -> None:
        """Audit a refused attempt (wrong role, self-approval, bad input)."""
        self.store.append_audit(
            now, actor, "broadcast.refused", SUBJECT, subject, reason=reason, **detail
        )

    def create(self, request: ComposeRequest, actor: str, now: datetime) -> BroadcastView:
        """Store a composed broadcast: ``approved`` (to publish now) or ``pending``."""
        try:
            with self.store.writing() as session:
                earlier = self._earlier(session, request)
                spec = request.model_dump(mode="json")
                before = rows.wire_broadcast(earlier) if earlier is not None else None
                broadcast = compose(request, now, before)
                waits = needs_approval(request.status, request.msg_type, request.buildings)
                override = (request.override_reason or "").strip() or None
                state = rows.PENDING if waits and override is None else rows.APPROVED
                row = rows.new_row(
                    broadcast,
                    now,
                    origin="manual",
                    state=state,
                    scope=request.scope,
                    proposed_by=actor,
                    approved_by=None if state == rows.PENDING else actor,
                    override_reason=override if waits else None,
                    refers_to=earlier.id if earlier is not None else None,
                    spec=spec,
                )
                session.add(row)
                detail = {
                    "status": row.status,
                    "msg_type": row.msg_type,
                    "buildings": list(row.buildings),
                    "headline": row.headline,
                    "refers_to": row.refers_to,
                }
                audit(
                    session,
                    now,
                    actor,
                    "broadcast.proposed",
                    SUBJECT,
                    row.id,
                    site=row.site,
                    **detail,
                )
                if state == rows.APPROVED:
                    if waits:
                        audit(
                            session,
                            now,
                            actor,
                            "broadcast.override",
                            SUBJECT,
                            row.id,
                            site=row.site,
                            reason=override,
                        )
                    self._approved(session, row, now)
                return view_of(session, row)
        except BroadcastError as exc:
            self.refuse(actor, now, exc.detail, site=request.site)
            raise

    def _approved(self, session: Session, row: BroadcastRow, now: datetime) -> None:
        rows.add_targets(session, row, now, self.store.redelivery)
        if row.refers_to is not None:
            earlier = session.get(BroadcastRow, row.refers_to)
            if earlier is not None:
                # Replaced: no more redelivery of the old words (the speakers stop them too).
                earlier.superseded_by = row.id
                rows.stop_redelivery(session, earlier.id)

    def approve(self, broadcast_id: str, actor: str, now: datetime) -> BroadcastView:
        try:
            with self.store.writing() as session:
                row = session.get(
                    BroadcastRow, broadcast_id, with_for_update=not self.store.is_sqlite
                )
                if row is None:
                    raise BroadcastError(404, f"no broadcast {broadcast_id}")
                if row.state != rows.PENDING:
                    raise BroadcastError(
                        409, f"broadcast {broadcast_id} is {row.state}, not pending"
                    )
                if row.proposed_by == actor:
                    raise BroadcastError(
                        403,
                        "the proposer cannot approve their own broadcast; "
                        "a second staff member must",
                    )
                if row.expires is not None and row.expires <= now:
                    raise BroadcastError(409, f"broadcast {broadcast_id} expired while pending")
                row.state = rows.APPROVED
                row.approved_by = actor
                row.approved_at = now
                audit(
                    session,
                    now,
                    actor,
                    "broadcast.approved",
                    SUBJECT,
                    row.id,
                    site=row.site,
                    proposed_by=row.proposed_by,
                )
                self._approved(session, row, now)
                return view_of(session, row)
        except BroadcastError as exc:
            self.refuse(actor, now, exc.detail, subject=broadcast_id, step="approve")
            raise

    def reject(self, broadcast_id: str, actor: str, reason: str, now: datetime) -> BroadcastView:
        with self.store.writing() as session:
            row = session.get(BroadcastRow, broadcast_id)
            if row is None:
                raise BroadcastError(404, f"no broadcast {broadcast_id}")
            if row.state != rows.PENDING:
                raise BroadcastError(409, f"broadcast {broadcast_id} is {row.state}, not pending")
            row.state = rows.REJECTED
            audit(
                session,
                now,
                actor,
                "broadcast.rejected",
                SUBJECT,
                row.id,
                site=row.site,
                reason=reason,
            )
            return view_of(session, row)

    def cancel_request(self, broadcast_id: str, words: CancelText) -> ComposeRequest:
        """The Cancel of a broadcast, to the same target set."""
        with self.store.reading() as session:
            row = session.get(BroadcastRow, broadcast_id)
            if row is None:
                raise BroadcastError(404, f"no broadcast {broadcast_id}")
            spec = row.spec or {}
        zh = None
        if words.text_zh:
            zh = Text(headline="警报解除", description=words.text_zh)
        en = None
        if words.text_en:
            en = Text(headline="All clear", description=words.text_en)
        return ComposeRequest(
            site=row.site,
            status=row.status,  # type: ignore[arg-type]  # what was stored came from these
            msg_type="Cancel",
            references=row.id,
            category=spec.get("category", "Safety"),
            urgency="Past",
            severity="Minor",
            scope=row.scope,  # type: ignore[arg-type]
            zh=zh,
            en=en,
            repeat=1,
        )

    def view(self, broadcast_id: str) -> BroadcastView | None:
        with self.store.reading() as session:
            row = session.get(BroadcastRow, broadcast_id)
            return None if row is None else view_of(session, row)

    def views(
        self, *, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[BroadcastView]:
        query = select(BroadcastRow)
        if state is not None:
            query = query.where(BroadcastRow.state == state)
        query = query.order_by(BroadcastRow.created_at.desc(), BroadcastRow.id.desc())
        with self.store.reading() as session:
            found = session.scalars(query.limit(limit).offset(offset))
            return [view_of(session, row) for row in found]

    def coverage(self, broadcast_id: str) -> rows.Coverage | None:
        with self.store.reading() as session:
            row = session.get(BroadcastRow, broadcast_id)
            return None if row is None else rows.coverage(session, row)

    def counts(self, broadcast_id: str) -> tuple[int, int]:
        """(targeted, confirmed): coverage in one cheap query, for polling."""
        with self.store.reading() as session:
            targeted, confirmed = session.execute(
                select(func.count(), func.count(BroadcastTargetRow.confirmed_at)).where(
                    BroadcastTargetRow.broadcast_id == broadcast_id
                )
            ).one()
            return int(targeted), int(confirmed)

    def cap_xml(self, broadcast_id: str) -> tuple[BroadcastRow, str] | None:
        with self.store.reading() as session:
            row = session.get(BroadcastRow, broadcast_id)
            if row is None or row.cap_xml is None:
                return None
            return row, row.cap_xml

    def public(self, site: str, now: datetime, limit: int = 100) -> list[BroadcastRow]:
        """The site's public warnings for the feed: Actual, scope Public, sent, with CAP;
        those still valid and those of the last day."""
        since = now - timedelta(days=1)
        query = (
            select(BroadcastRow)
            .where(
                BroadcastRow.site == site,
                BroadcastRow.status == "Actual",
                BroadcastRow.scope == "Public",
                BroadcastRow.state == rows.SENT,
                BroadcastRow.cap_xml.is_not(None),
                (BroadcastRow.created_at >= since) | (BroadcastRow.expires > now),
            )
            .order_by(BroadcastRow.created_at.desc(), BroadcastRow.id.desc())
            .limit(limit)
        )
        with self.store.reading() as session:
            return list(session.scalars(query))

    def due(self, now: datetime) -> list[rows.Due]:
        # Most ticks find nothing to follow up: a read first keeps them off SQLite's one writer.
        with self.store.reading() as session:
            active = session.scalar(
                select(BroadcastGatewayRow.broadcast_id)
                .where(BroadcastGatewayRow.next_at.is_not(None))
                .limit(1)
            )
        if active is None:
            return []
        with self.store.writing() as session:
            due = rows.due_redeliveries(
                session, now, self.store.redelivery, lock=self.store.skip_locked
            )
            for item in due:
                audit(
                    session,
                    now,
                    "system",
                    "broadcast.redelivered",
                    SUBJECT,
                    item.broadcast_id,
                    site=item.site,
                    gateways=[list(g) for g in item.gateways],
                )
            return due


class Broadcaster:
    """Publishes approved broadcasts and redelivers what speakers have not confirmed."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        clock: Clock = utc_now,
        tick_s: float = 1.0,
    ) -> None:
        self.broadcasts = Broadcasts(store)
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.tick_s = tick_s
        self.counters: Counter[str] = Counter()

    async def send(self, broadcast_id: str) -> bool:
        """Publish an approved broadcast now; False if it must wait for the publish loop."""
        pending = await asyncio.to_thread(self.store.unpublished_broadcasts)
        record = next((r for r in pending if r.id == broadcast_id), None)
        if record is None:
            return False
        try:
            await self.publisher.publish(topics.broadcast(record.site), record.payload, qos=1)
        except BusError as exc:
            # Stays approved and unpublished: Intake.publish_pending sends it on reconnect.
            self.counters["publish_errors"] += 1
            log.warning("broadcast %s not published yet: %s", broadcast_id, exc)
            return False
        await asyncio.to_thread(self.store.mark_published, broadcast_id, self.clock())
        self.counters["published"] += 1
        return True

    async def tick(self) -> None:
        """Redeliver what is due. Never raises (except cancellation)."""
        try:
            due = await asyncio.to_thread(self.broadcasts.due, self.clock())
            for item in due:
                await self.publisher.publish(topics.broadcast(item.site), item.payload, qos=1)
                self.counters["redelivered"] += 1
                log.info("broadcast %s redelivered via %s", item.broadcast_id, item.gateways)
        except (StoreError, BusError) as exc:
            self.counters["errors"] += 1
            log.warning("broadcast redelivery: %s", exc)
        except Exception:
            self.counters["errors"] += 1
            log.exception("broadcast redelivery: unexpected failure")

    async def run(self) -> None:
        while True:
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(self.tick_s)
