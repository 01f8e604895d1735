"""What the console's pages show, read from the hub's store (blocking: call in a thread).

Everything a family may read goes through the caller's ``Scope``, the same one the API uses.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

from hub.directory import ResidentRecord
from hub.incidents import AuditRecord, IncidentRecord, Scope
from hub.routing import DEFAULT_LIFE_SAFETY
from hub.store import AlertRecord, BroadcastRecord, GatewayState, Store
from hub.tables import AlertRow, BroadcastRow, DeliveryRow, DeviceRow, GatewayRow, PersonRow

LIFE_SAFETY = frozenset(DEFAULT_LIFE_SAFETY)
ACTIVE_STATES = ("open", "acknowledged")


def is_life_safety(kind: str, severity: str) -> bool:
    return kind in LIFE_SAFETY or severity == "Extreme"


@dataclass(frozen=True, slots=True)
class Board:
    active: list[IncidentRecord]
    resolved: list[IncidentRecord]
    after: int  # the audit id the page shows: the live stream starts after it


def board(store: Store, scope: Scope) -> Board:
    after = store.latest_audit_id()
    active = [i for state in ACTIVE_STATES for i in store.incidents(scope, state=state)]
    active.sort(key=lambda i: (i.state != "open", -i.opened_at.timestamp()))
    return Board(active, store.incidents(scope, state="resolved", limit=20), after)


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    created_at: datetime
    person: str
    channel: str
    notice: str
    status: str
    attempts: int
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class Timeline:
    incident: IncidentRecord
    alerts: list[AlertRecord]
    audit: list[AuditRecord]
    deliveries: list[DeliveryLine]
    broadcasts: list[BroadcastRecord]


def timeline(store: Store, incident: IncidentRecord, *, with_deliveries: bool) -> Timeline:
    alerts = store.incident_events(incident.id)
    audit = store.audit(subject_id=incident.id)
    deliveries: list[DeliveryLine] = []
    cause_ids = [a.id for a in alerts]
    with store.reading() as session:
        if with_deliveries:
            rows = session.execute(
                select(DeliveryRow, PersonRow.name)
                .join(PersonRow, PersonRow.id == DeliveryRow.person_id, isouter=True)
                .where(DeliveryRow.incident_id == incident.id)
                .order_by(DeliveryRow.id)
            )
            deliveries = [
                DeliveryLine(d.created_at, name or str(d.person_id), d.channel, d.notice,
                             d.status, d.attempts, d.sent_at)
                for d, name in rows
            ]  # fmt: skip
        broadcast_ids = list(
            session.scalars(select(BroadcastRow.id).where(BroadcastRow.cause.in_(cause_ids)))
        )
    broadcasts = [b for b in (store.broadcast(i) for i in broadcast_ids) if b is not None]
    return Timeline(incident, alerts, audit, deliveries, broadcasts)


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    state: GatewayState
    devices_known: int
    rejected: int


@dataclass(frozen=True, slots=True)
class BuildingHealth:
    building: str | None
    gateways: list[GatewayHealth] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(not g.state.stale for g in self.gateways)


def gateway_health(store: Store, now: datetime) -> list[BuildingHealth]:
    """Each building's gateways: heartbeat state, sensors online of those known, rejects."""
    states = store.gateway_states(now)
    rejects: defaultdict[tuple[str, str], int] = defaultdict(int)
    for (site, gateway, _reason), count in store.dead_letter_counts().items():
        rejects[site, gateway] += count
    with store.reading() as session:
        buildings = {
            (site, gateway): building
            for site, gateway, building in session.execute(
                select(GatewayRow.site, GatewayRow.gateway, GatewayRow.building)
            )
        }
        # A gateway whose building the hub has not recorded yet: the building its alerts are
        # about, when they all name the same one.
        alerted: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        for site, gateway, building in session.execute(
            select(AlertRow.site, AlertRow.gateway, AlertRow.building)
            .where(AlertRow.building.is_not(None))
            .distinct()
        ):
            if building is not None:
                alerted[site, gateway].add(building)
        for key, found in alerted.items():
            if buildings.get(key) is None and len(found) == 1:
                buildings[key] = next(iter(found))
        known = {
            (site, gateway): count
            for site, gateway, count in session.execute(
                select(DeviceRow.site, DeviceRow.gateway, func.count()).group_by(
                    DeviceRow.site, DeviceRow.gateway
                )
            )
        }
    grouped: dict[str | None, BuildingHealth] = {}
    for state in states:
        key = (state.site, state.gateway)
        building = buildings.get(key)
        entry = grouped.setdefault(building, BuildingHealth(building))
        entry.gateways.append(GatewayHealth(state, known.get(key, 0), rejects[key]))
    return sorted(grouped.values(), key=lambda b: (b.building is None, b.building or ""))


@dataclass(frozen=True, slots=True)
class RelativeStatus:
    resident: ResidentRecord
    open_incidents: list[IncidentRecord]
    history: list[IncidentRecord]
    last_activity: AlertRecord | None
    gateway: GatewayState | None


def family(store: Store, scope: Scope, now: datetime) -> list[RelativeStatus]:
    """Each of the caller's relatives: open alerts, history, last record, home gateway."""
    residents = store.residents(scope)
    incidents = store.incidents(scope, limit=200)
    alerts = store.alerts_in(scope, limit=200)
    gateways = store.gateway_states(now)
    with store.reading() as session:
        building_of = {
            (site, gateway): building
            for site, gateway, building in session.execute(
                select(GatewayRow.site, GatewayRow.gateway, GatewayRow.building)
            )
        }
    out: list[RelativeStatus] = []
    for resident in residents:
        place = (resident.site, resident.building, resident.unit)
        mine = [i for i in incidents if (i.site, i.building, i.unit) == place]
        their_alerts = [a for a in alerts if (a.site, a.building, a.unit) == place]
        # The building's gateway; failing a recorded building, the one that sent its alerts.
        serving = {i.gateway for i in mine} | {a.gateway for a in their_alerts}
        home = next(
            (
                g
                for g in gateways
                if g.site == resident.site
                and building_of.get((g.site, g.gateway)) == resident.building
            ),
            next((g for g in gateways if g.site == resident.site and g.gateway in serving), None),
        )
        out.append(
            RelativeStatus(
                resident,
                [i for i in mine if i.state != "resolved"],
                mine,
                their_alerts[0] if their_alerts else None,
                home,
            )
        )
    return out


def on_the_way(store: Store, incident_ids: list[str]) -> dict[str, str]:
    """Incident id -> who last said "I am on my way" to it."""
    coming: dict[str, str] = {}
    for incident_id in incident_ids:
        for line in store.audit(subject_id=incident_id):
            if line.action == "incident.on_the_way":
                coming[incident_id] = line.actor
    return coming


# The shape the live board clones for an incident it has not shown yet (ids filled by script).
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PLACEHOLDER = IncidentRecord(
    id="__ID__", site="", gateway="", key="", kind="", severity="Unknown", building=None,
    unit=None, device=None, message="", state="open", opened_at=_EPOCH, last_event_at=_EPOCH,
    event_count=0, cleared_at=None, acknowledged_at=None, acknowledged_by=None,
    resolved_at=None, resolved_by=None, tier=0, next_escalation_at=None, updated_at=_EPOCH,
)  # fmt: skip
