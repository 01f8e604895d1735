"""Alert events grouped into incidents; open -> acknowledged -> resolved; the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hub.incidents import IncidentStateError, Scope, UnknownIncident
from hub.store import Store
from tests.unit.hub.helpers import NOW, gas_event
from wire import Phase, Severity


def test_events_of_one_cause_within_the_window_make_one_incident(store: Store) -> None:
    first = store.record_alert_event(gas_event(severity=Severity.SEVERE), NOW)
    assert first.incident_opened and first.incident_id is not None
    later = gas_event(phase=Phase.UPDATED, at=NOW + timedelta(minutes=10))
    second = store.record_alert_event(later, NOW + timedelta(minutes=10))
    assert second.incident_id == first.incident_id and not second.incident_opened
    # A repeat of an event changes nothing.
    assert store.record_alert_event(later, NOW).incident_id is None
    [incident] = store.incidents()
    assert (incident.state, incident.severity, incident.event_count) == ("open", "Extreme", 2)
    assert [e.id for e in store.incident_events(incident.id)] == [
        e.id for e in reversed(store.alerts())
    ]
    actions = [a.action for a in store.audit(subject_id=incident.id)]
    assert actions == ["incident.opened", "incident.severity"]


def test_a_clear_older_than_the_latest_event_does_not_clear(store: Store) -> None:
    """The alarm cleared at +1 min and rose again at +2; the clear arrives last (a replay)."""
    minutes = [NOW + timedelta(minutes=m) for m in range(4)]
    store.record_alert_event(gas_event(at=minutes[0]), minutes[0])
    store.record_alert_event(gas_event(phase=Phase.UPDATED, at=minutes[2]), minutes[2])
    late = store.record_alert_event(gas_event(phase=Phase.CLEARED, at=minutes[1]), minutes[2])
    assert late.incident_id is not None
    [incident] = store.incidents()
    assert (incident.state, incident.cleared_at, incident.event_count) == ("open", None, 3)
    actions = [a.action for a in store.audit(subject_id=incident.id)]
    assert actions[-1] == "incident.late_clear_ignored"
    # A clear that is the newest event clears it.
    store.record_alert_event(gas_event(phase=Phase.CLEARED, at=minutes[3]), minutes[3])
    [incident] = store.incidents()
    assert incident.cleared_at == minutes[3]


def test_another_gateway_or_key_or_a_late_event_opens_another_incident(store: Store) -> None:
    store.record_alert(gas_event(), NOW)
    store.record_alert(gas_event(gateway="g2"), NOW)
    store.record_alert(gas_event(at=NOW + timedelta(hours=2)), NOW + timedelta(hours=2))
    assert len(store.incidents()) == 3


def test_acknowledge_then_resolve_with_audit(store: Store) -> None:
    recorded = store.record_alert_event(gas_event(), NOW)
    assert recorded.incident_id is not None
    incident_id = recorded.incident_id
    acked = store.acknowledge_incident(incident_id, "alice", NOW + timedelta(minutes=1))
    assert (acked.state, acked.acknowledged_by, acked.next_escalation_at) == (
        "acknowledged",
        "alice",
        None,
    )
    with pytest.raises(IncidentStateError):
        store.acknowledge_incident(incident_id, "bob", NOW)
    resolved = store.resolve_incident(incident_id, "bob", NOW + timedelta(minutes=5), note="ok")
    assert (resolved.state, resolved.resolved_by) == ("resolved", "bob")
    with pytest.raises(IncidentStateError):
        store.resolve_incident(incident_id, "bob", NOW)
    audit = store.audit(subject_id=incident_id)
    assert [(a.actor, a.action) for a in audit] == [
        ("gateway:s1/g1", "incident.opened"),
        ("alice", "incident.acknowledged"),
        ("bob", "incident.resolved"),
    ]
    assert audit[2].detail["note"] == "ok"
    # After a resolution the same cause opens a new incident.
    store.record_alert(gas_event(at=NOW + timedelta(minutes=6)), NOW + timedelta(minutes=6))
    assert [i.state for i in store.incidents()] == ["open", "resolved"]


def test_a_clear_marks_an_open_incident_and_resolves_an_acknowledged_one(store: Store) -> None:
    opened = store.record_alert_event(gas_event(), NOW).incident_id
    assert opened is not None
    cleared = gas_event(phase=Phase.CLEARED, at=NOW + timedelta(minutes=1))
    assert store.record_alert_event(cleared, NOW).incident_id == opened
    incident = store.incident(opened)
    assert incident is not None
    # Still open and escalating: nobody has looked yet.
    assert incident.state == "open" and incident.cleared_at == cleared.ts
    assert incident.next_escalation_at is not None
    acked = store.acknowledge_incident(opened, "alice", NOW + timedelta(minutes=2))
    assert acked.state == "resolved" and acked.resolved_by == "system"

    second = store.record_alert_event(gas_event(at=NOW + timedelta(minutes=3)), NOW).incident_id
    assert second is not None and second != opened
    store.acknowledge_incident(second, "alice", NOW)
    store.record_alert(gas_event(phase=Phase.CLEARED, at=NOW + timedelta(minutes=4)), NOW)
    assert store.incident(second) is not None
    assert store.incident(second).state == "resolved"  # type: ignore[union-attr]


def test_a_clear_without_an_incident_belongs_to_none(store: Store) -> None:
    recorded = store.record_alert_event(gas_event(phase=Phase.CLEARED), NOW)
    assert recorded.stored and recorded.incident_id is None
    assert store.incidents() == []


def test_scopes_limit_incidents_and_alerts(store: Store) -> None:
    store.record_alert(gas_event(building="3"), NOW)
    store.record_alert(gas_event(building="4", gateway="g2"), NOW)
    mine = Scope(frozenset({("s1", "3", "301")}))
    assert [i.building for i in store.incidents(mine)] == ["3"]
    assert [a.building for a in store.alerts_in(mine)] == ["3"]
    assert store.incidents(Scope(frozenset())) == []
    other = store.incidents(Scope())[0 if store.incidents()[0].building == "4" else 1]
    assert store.incident(other.id, mine) is None
    with pytest.raises(UnknownIncident):
        store.acknowledge_incident(other.id, "family", NOW, mine)


def test_family_scope_comes_from_links(store: Store) -> None:
    grandma = store.add_resident("Grandma Li", "s1", "3", "301")
    store.add_resident("Mr Wang", "s1", "4", "401")
    daughter = store.add_person("li-daughter", "Li Na", "family")
    store.link_family(daughter, grandma)
    scope = store.scope_of(daughter, "family")
    assert scope.units == frozenset({("s1", "3", "301")})
    assert [r.name for r in store.residents(scope)] == ["Grandma Li"]
    assert store.scope_of(daughter, "staff").everything
