"""Compare what the simulator caused with what the system did.

Ground truth: the simulator's incidents and the alerts each one expects (kind, severity, place,
latest time). Evidence, gathered after the run:

- the hub's store (alert events, incidents, broadcasts and the receipts the speakers sent);
- what was notified: the SMTP server's messages and the webhook receiver's bodies;
- what the speakers played: every distinct ``played`` receipt they sent.

Counted per expected alert:

- lost: no alert of that kind, place and at least that severity reached the hub; or its
  incident was not notified on a channel the policy names; or (an Extreme gas alarm) no
  broadcast was made, or the building's speaker never reported it played;
- duplicated: the cause became two incidents, or was raised twice; a notice sent twice to the
  same person on the same channel; two broadcasts for one alarm; a speaker that played one
  broadcast twice (two distinct ``played`` receipts from it);
- late: the hub stored the first matching alert more than ``grace_s`` of wall time after the
  expectation's ``latest`` (simulated time, mapped to wall time by the run's speed).

Late is reported, not asserted: a fault such as a dead hub delays alarms by design.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import msgspec

from hub.incidents import IncidentRecord
from hub.store import AlertRecord, BroadcastRecord, Store
from wire import Severity
from wire.replay import ExpectedAlert, GroundTruth, Incident

SEVERITY_RANK = {
    Severity.UNKNOWN: 0,
    Severity.MINOR: 1,
    Severity.MODERATE: 2,
    Severity.SEVERE: 3,
    Severity.EXTREME: 4,
}


@dataclass(frozen=True, slots=True)
class Run:
    """The simulator's truth file: what it caused, and how simulated time maps to wall time."""

    truth: GroundTruth
    speed: float
    played_at: datetime

    @classmethod
    def read(cls, path: Path) -> Run:
        document = json.loads(path.read_text())
        truth = msgspec.convert(document["truth"], GroundTruth)
        played_at = datetime.fromtimestamp(document["played_at"], UTC)
        return cls(truth, float(document["speed"]), played_at)

    def wall(self, simulated: datetime) -> datetime:
        offset = (simulated - self.truth.start).total_seconds()
        return self.played_at + timedelta(seconds=offset / self.speed if self.speed else 0.0)


@dataclass(frozen=True, slots=True)
class Notified:
    """Where notices are expected: (channel, recipient) pairs per incident.

    ``email`` recipients are addresses (the ``To`` header); ``webhook`` recipients usernames.
    """

    email: tuple[str, ...] = ()
    webhook: tuple[str, ...] = ()


@dataclass(slots=True)
class Evidence:
    alerts: list[AlertRecord]
    incidents: list[IncidentRecord]
    incident_of: dict[str, str]  # alert event id -> incident id
    broadcasts: list[BroadcastRecord]
    emails: list[Message]
    webhooks: list[dict[str, Any]]
    # (speaker, broadcast id) for every distinct "played" receipt a speaker sent.
    plays: list[tuple[str, str]]

    @classmethod
    def gather(
        cls,
        store: Store,
        emails: Sequence[Message],
        webhooks: Sequence[dict[str, Any]],
        plays: Sequence[tuple[str, str]],
    ) -> Evidence:
        incidents = store.incidents(limit=100_000)
        incident_of = {
            event.id: incident.id
            for incident in incidents
            for event in store.incident_events(incident.id)
        }
        return cls(
            alerts=store.alerts(limit=100_000),
            incidents=incidents,
            incident_of=incident_of,
            broadcasts=store.broadcasts(limit=100_000),
            emails=list(emails),
            webhooks=list(webhooks),
            plays=list(plays),
        )


@dataclass(slots=True)
class Result:
    scenario: str
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.scenario}: expected={self.expected} "
            f"lost={self.lost} duplicated={self.duplicated} late={self.late}"
        )

    def report(self) -> str:
        return "\n".join([self.line(), *(f"  {p}" for p in self.problems)])


def at_place(expect: ExpectedAlert, incident: Incident, alert: AlertRecord) -> bool:
    if alert.kind != expect.kind or alert.site != incident.site:
        return False
    if expect.device is not None:
        # A resident-scoped alarm names the resident in its key; the device may be the button.
        return expect.device == alert.device or expect.device in alert.key
    return (expect.unit is None or expect.unit == alert.unit) and (
        expect.building is None or expect.building == alert.building
    )


def check(
    scenario: str,
    run: Run,
    evidence: Evidence,
    *,
    notified: Notified,
    speakers: dict[str, list[str]],
    grace_s: float = 10.0,
) -> Result:
    """Score the evidence against the run's truth. ``speakers``: building -> speaker ids."""
    result = Result(scenario)
    raising = [a for a in evidence.alerts if a.phase in ("raised", "updated")]
    incident_of = evidence.incident_of
    mails = Counter((m["X-Anmin-Incident"], m["To"]) for m in evidence.emails)
    hooks = Counter((b["incident"]["id"], b["person"]["username"]) for b in evidence.webhooks)
    plays = Counter(evidence.plays)
    for incident in run.truth.incidents:
        for expect in incident.expect:
            result.expected += 1
            what = f"{incident.id} {expect.kind} {expect.severity.value} {expect.device}"
            place = [a for a in evidence.alerts if at_place(expect, incident, a)]
            matching = [
                a
                for a in raising
                if a in place
                and SEVERITY_RANK[Severity(a.severity)] >= SEVERITY_RANK[expect.severity]
            ]
            if not matching:
                result.lost += 1
                result.problems.append(f"lost: no alert at the hub for {what}")
                continue
            first = min(matching, key=lambda a: a.received_at)
            due = run.wall(expect.latest) + timedelta(seconds=grace_s)
            if first.received_at > due:
                result.late += 1
                late_s = (first.received_at - due).total_seconds()
                result.problems.append(f"late: {what} by {late_s:.1f}s past the grace")
            raised = [a for a in place if a.phase == "raised"]
            causes = {incident_of.get(a.id) for a in place} - {None}
            extra = max(len(raised) - 1, len(causes) - 1, 0)
            if extra:
                result.duplicated += extra
                result.problems.append(
                    f"duplicated: {what} raised {len(raised)}x, {len(causes)} incidents"
                )
            hub_incident = incident_of.get(first.id)
            if hub_incident is None:
                result.lost += 1
                result.problems.append(f"lost: {what} stored but in no incident")
                continue
            _count_notices(result, what, hub_incident, notified, mails, hooks)
            if expect.kind == "gas" and expect.severity is Severity.EXTREME:
                _count_broadcast(result, what, incident, place, evidence, speakers, plays)
    return result


def _count_notices(
    result: Result,
    what: str,
    incident_id: str,
    notified: Notified,
    mails: Counter[tuple[str, str]],
    hooks: Counter[tuple[str, str]],
) -> None:
    wanted = [("email", to, mails[(incident_id, to)]) for to in notified.email] + [
        ("webhook", who, hooks[(incident_id, who)]) for who in notified.webhook
    ]
    for channel, recipient, count in wanted:
        if count == 0:
            result.lost += 1
            result.problems.append(f"lost: no {channel} to {recipient} for {what}")
        elif count > 1:
            result.duplicated += count - 1
            result.problems.append(f"duplicated: {count} {channel}s to {recipient} for {what}")


def _count_broadcast(
    result: Result,
    what: str,
    incident: Incident,
    place: list[AlertRecord],
    evidence: Evidence,
    speakers: dict[str, list[str]],
    plays: Counter[tuple[str, str]],
) -> None:
    ids = {a.id for a in place}
    made = [b for b in evidence.broadcasts if b.cause in ids]
    if not made:
        result.lost += 1
        result.problems.append(f"lost: no broadcast for {what}")
        return
    if len(made) > 1:
        result.duplicated += len(made) - 1
        result.problems.append(f"duplicated: {len(made)} broadcasts for {what}")
    broadcast = made[0]
    for speaker in speakers.get(incident.building, []):
        played = [r for r in broadcast.receipts if r.speaker == speaker and r.outcome == "played"]
        if not played:
            result.lost += 1
            result.problems.append(f"lost: {speaker} never reported {broadcast.id} played")
        told = plays[(speaker, broadcast.id)]
        if told > 1:
            result.duplicated += told - 1
            result.problems.append(f"duplicated: {speaker} played {broadcast.id} {told}x")


def count_ids(scenario: str, expected: Collection[str], delivered: Sequence[str]) -> Result:
    """For the single-gateway tests that run without the simulator: the event ids that had to
    arrive, against every id that did (a repeat is a duplicate, a missing one lost)."""
    seen = Counter(delivered)
    result = Result(scenario, expected=len(expected))
    for event_id in expected:
        if seen[event_id] == 0:
            result.lost += 1
            result.problems.append(f"lost: {event_id}")
    for event_id, count in seen.items():
        if count > 1:
            result.duplicated += count - 1
            result.problems.append(f"duplicated: {event_id} {count}x")
    return result
