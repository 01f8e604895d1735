"""Retention: records older than their period (``HubSettings.retention``) are deleted.

``purge(store, retention, now)`` is one pass, a pure function of the database and ``now``;
``start_purging`` runs it every ``retention.interval_s`` in the hub's lifespan. Several hubs
may purge at once: a DELETE of what is already gone deletes nothing.

What is kept, and why (docs/security.md, "Retention"):
- an incident is purged only once resolved, after ``incident_days`` (``life_safety_days`` for
  fire, gas, CO, SOS, falls, vital signs, and anything Extreme);
- an alert event after ``alert_days``, but never while its incident is still kept: the
  incident's events are its evidence;
- deliveries after ``delivery_days`` once finished (sent or failed); receipts after
  ``receipt_days``; dead-letter counts ``dead_letter_days`` after their last rejection;
- broadcasts are public warnings, hold no personal data and stay;
- the audit log stays: database triggers make it append-only, and the accountability record
  of who acknowledged, broadcast or erased what must outlive what it is about.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select

from hub.errors import HubError
from hub.incidents import RESOLVED, SYSTEM, audit
from hub.routing import DEFAULT_LIFE_SAFETY
from hub.settings import Retention
from hub.store import Store
from hub.tables import (
    AlertRow,
    DeadLetterCountRow,
    DeliveryRow,
    IncidentRow,
    ReceiptRow,
)
from wire import Severity

log = logging.getLogger(__name__)

# The routing policy's life-safety kinds, and the elder-care ones a family must be able to
# look back on (a fall, vital signs), are kept for ``life_safety_days``.
LIFE_SAFETY_KINDS = frozenset(DEFAULT_LIFE_SAFETY) | {"heat", "vital_signs"}
# Deliveries still in flight are never purged, however old.
FINISHED_DELIVERIES = ("sent", "failed")


def purge(store: Store, retention: Retention, now: datetime) -> dict[str, int]:
    """Delete what is past its period; returns how many rows went, per table.

    When anything went, the pass is written to the audit log (actor ``system``).
    """

    def cutoff(days: float) -> datetime:
        return now - timedelta(days=days)

    life_safety = or_(
        IncidentRow.kind.in_(LIFE_SAFETY_KINDS), IncidentRow.severity == Severity.EXTREME.value
    )
    last = IncidentRow.last_event_at
    counts: dict[str, int] = {}
    with store.writing() as session:
        counts["incidents"] = _count(
            session.execute(
                delete(IncidentRow).where(
                    IncidentRow.state == RESOLVED,
                    or_(
                        and_(~life_safety, last < cutoff(retention.incident_days)),
                        and_(life_safety, last < cutoff(retention.life_safety_days)),
                    ),
                )
            )
        )  # fmt: skip
        kept = select(IncidentRow.id)
        counts["alert_events"] = _count(
            session.execute(
                delete(AlertRow).where(
                    AlertRow.ts < cutoff(retention.alert_days),
                    or_(AlertRow.incident_id.is_(None), AlertRow.incident_id.not_in(kept)),
                )
            )
        )
        counts["deliveries"] = _count(
            session.execute(
                delete(DeliveryRow).where(
                    DeliveryRow.created_at < cutoff(retention.delivery_days),
                    or_(
                        DeliveryRow.status.in_(FINISHED_DELIVERIES),
                        DeliveryRow.incident_id.not_in(kept),
                    ),
                )
            )
        )
        counts["receipts"] = _count(
            session.execute(
                delete(ReceiptRow).where(ReceiptRow.received_at < cutoff(retention.receipt_days))
            )
        )
        counts["dead_letters"] = _count(
            session.execute(
                delete(DeadLetterCountRow).where(
                    DeadLetterCountRow.last_at < cutoff(retention.dead_letter_days)
                )
            )
        )
        purged = {table: n for table, n in counts.items() if n}
        if purged:  # in the same transaction: no purge without its record, nor the reverse
            audit(session, now, SYSTEM, "retention.purged", "retention", "hub", purged=purged)
    if purged:
        log.info("retention: purged %s", ", ".join(f"{n} {t}" for t, n in purged.items()))
    return counts


def _count(result: object) -> int:
    rowcount = getattr(result, "rowcount", 0)
    return int(rowcount) if isinstance(rowcount, int) and rowcount > 0 else 0


async def purge_loop(store: Store, retention: Retention, clock: Callable[[], datetime]) -> None:
    """Purge now, then every ``retention.interval_s``; a failed pass is logged and retried."""
    while True:
        try:
            await asyncio.to_thread(purge, store, retention, clock())
        except HubError as exc:
            log.warning("retention: the purge failed (%s); trying again in %.0f s", exc,
                        retention.interval_s)  # fmt: skip
        await asyncio.sleep(retention.interval_s)


def start_purging(
    store: Store,
    retention: Retention,
    *,
    clock: Callable[[], datetime],
    until: asyncio.Task[None],
) -> asyncio.Task[None]:
    """Run ``purge_loop`` as a task that is cancelled when ``until`` ends (the lifespan stops
    ``until`` before it closes the store), so wiring it in is one line."""
    task = asyncio.create_task(purge_loop(store, retention, clock), name="retention")
    until.add_done_callback(lambda _: task.cancel())
    return task
