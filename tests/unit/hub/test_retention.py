"""The hub's purge job: what is past its period goes, what is still needed stays, the audit log
stays append-only. Time is injected; runs on SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import msgspec
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from hub.errors import StoreError
from hub.retention import purge, start_purging
from hub.settings import Retention, _retention
from hub.store import Store
from hub.tables import AlertRow, AuditRow, DeadLetterCountRow, DeliveryRow, IncidentRow, ReceiptRow
from tests.conftest import wait_for
from tests.unit.hub.helpers import NOW, gas_event, receipt
from wire import AlertEvent, DeadLetter, Phase, Severity

RETENTION = Retention(
    alert_days=30,
    incident_days=30,
    life_safety_days=365,
    delivery_days=10,
    dead_letter_days=10,
    receipt_days=30,
)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def count(store: Store, table: type) -> int:
    with store.reading() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def incident_of(store: Store, event_id: str) -> str:
    with store.reading() as session:
        incident = session.scalar(select(AlertRow.incident_id).where(AlertRow.id == event_id))
    assert incident is not None
    return incident


def delivery(store: Store, incident_id: str, status: str, at: datetime) -> None:
    with store.writing() as session:
        session.add(
            DeliveryRow(
                incident_id=incident_id,
                notice="tier:0",
                person_id=1,
                channel="email",
                status=status,
                attempts=1,
                next_attempt_at=at,
                created_at=at,
            )
        )


def ev(kind: str, severity: Severity, building: str, **more: object) -> AlertEvent:
    """An event of its own cause (its own key), so each makes its own incident."""
    e = gas_event(kind=kind, severity=severity, building=building, **more)  # type: ignore[arg-type]
    return msgspec.structs.replace(e, key=f"{kind}:{building}")


def seed(store: Store) -> dict[str, str]:
    """At NOW: a moderate incident (resolved), a gas incident (resolved, life safety), an open
    moderate one, deliveries, a receipt and a dead letter."""
    ids: dict[str, str] = {}
    moderate = ev("inactivity", Severity.MODERATE, "5")
    gas = ev("gas", Severity.SEVERE, "6")
    still_open = ev("inactivity", Severity.MODERATE, "7")
    for name, e in (("moderate", moderate), ("gas", gas), ("open", still_open)):
        store.record_alert_event(e, NOW)
        ids[name] = incident_of(store, e.id)
        ids[f"{name}_event"] = e.id
    for name in ("moderate", "gas"):
        store.resolve_incident(ids[name], "staff", NOW + timedelta(minutes=5))
    delivery(store, ids["moderate"], "sent", NOW)
    delivery(store, ids["open"], "retrying", NOW)
    broadcast = store.record_alert_event(ev("smoke", Severity.EXTREME, "8"), NOW).broadcast
    assert broadcast is not None
    store.record_receipt(receipt(broadcast.id), site="s1", gateway="g1", now=NOW)
    dead = DeadLetter(
        site="s1", gateway="g1", topic="t", reason="bad_json", detail="x", ts=NOW, size=3
    )
    store.record_dead_letter(dead, NOW)
    return ids


def test_nothing_goes_before_its_time(store: Store) -> None:
    seed(store)
    before = {t: count(store, t) for t in (IncidentRow, AlertRow, DeliveryRow, ReceiptRow)}
    counts = purge(store, RETENTION, NOW + 9 * DAY)
    assert sum(counts.values()) == 0
    assert {t: count(store, t) for t in before} == before
    assert count(store, DeadLetterCountRow) == 1


def test_each_record_goes_after_its_period_and_life_safety_stays_longer(store: Store) -> None:
    ids = seed(store)
    audit_before = count(store, AuditRow)
    # Day 11: dead letters and the finished delivery are past 10 days; the retrying one stays.
    counts = purge(store, RETENTION, NOW + 11 * DAY)
    assert counts["dead_letters"] == 1 and counts["deliveries"] == 1
    with store.reading() as session:
        assert session.scalars(select(DeliveryRow.status)).all() == ["retrying"]

    # Day 31: the resolved moderate incident and its event go; the gas incident (life
    # safety) and the open one stay, with their events; the receipt goes.
    counts = purge(store, RETENTION, NOW + 31 * DAY)
    assert counts["incidents"] == 1 and counts["receipts"] == 1
    assert store.incident(ids["moderate"]) is None
    assert store.incident(ids["gas"]) is not None and store.incident(ids["open"]) is not None
    with store.reading() as session:
        events = set(session.scalars(select(AlertRow.id)))
    assert ids["moderate_event"] not in events
    assert {ids["gas_event"], ids["open_event"]} <= events

    # Day 366: the life-safety incident's year is over; the open incident is never purged.
    purge(store, RETENTION, NOW + 366 * DAY)
    assert store.incident(ids["gas"]) is None
    assert store.incident(ids["open"]) is not None
    with store.reading() as session:
        assert ids["open_event"] in set(session.scalars(select(AlertRow.id)))

    # Every pass that deleted something is in the audit log, which itself lost nothing.
    purges = [a for a in store.audit() if a.action == "retention.purged"]
    assert len(purges) == 3 and all(a.actor == "system" for a in purges)
    assert count(store, AuditRow) == audit_before + 3


def test_the_audit_log_refuses_deletion_even_when_old(store: Store) -> None:
    store.append_audit(NOW - 4000 * DAY, "admin", "login", "person", "1")
    purge(store, RETENTION, NOW)
    assert count(store, AuditRow) == 1  # retention leaves the audit log alone
    # SQLite's trigger raises an IntegrityError, PostgreSQL's an error the store wraps.
    with pytest.raises((StoreError, IntegrityError)), store.writing() as session:
        session.execute(delete(AuditRow))
    assert count(store, AuditRow) == 1


def test_retention_from_the_environment() -> None:
    assert _retention({}) == Retention()
    custom = _retention({"ANMIN_HUB_RETAIN_DELIVERY_DAYS": "30"})
    assert custom.delivery_days == 30 and custom.alert_days == Retention().alert_days
    with pytest.raises(ValueError, match="ANMIN_HUB_RETAIN_ALERT_DAYS"):
        _retention({"ANMIN_HUB_RETAIN_ALERT_DAYS": "forever"})
    with pytest.raises(ValueError, match="positive"):
        _retention({"ANMIN_HUB_RETAIN_ALERT_DAYS": "0"})


def test_the_purge_task_runs_at_once_and_stops_with_the_lifespan(store: Store) -> None:
    seed(store)

    async def scenario() -> None:
        lifespan = asyncio.create_task(asyncio.sleep(3600))
        task = start_purging(store, RETENTION, clock=lambda: NOW + 400 * DAY, until=lifespan)
        await wait_for(lambda: count(store, ReceiptRow) == 0, timeout=30, what="a purge")
        lifespan.cancel()
        await asyncio.wait([task], timeout=30)
        assert task.cancelled()

    asyncio.run(scenario())
    assert count(store, ReceiptRow) == 0 and count(store, DeadLetterCountRow) == 0


def test_no_incident_event_outlives_a_phase_change(store: Store) -> None:
    """A cleared event joins its incident; both go together once resolved and old."""
    raised = ev("inactivity", Severity.MODERATE, "9")
    store.record_alert_event(raised, NOW)
    cleared = ev("inactivity", Severity.MODERATE, "9", phase=Phase.CLEARED, at=NOW + 60 * SECOND)
    store.record_alert_event(cleared, NOW + timedelta(minutes=1))
    incident = incident_of(store, raised.id)
    store.resolve_incident(incident, "staff", NOW + timedelta(minutes=2))
    purge(store, RETENTION, NOW + 31 * DAY)
    assert count(store, AlertRow) == 0 and store.incident(incident) is None
