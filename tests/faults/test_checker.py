"""The checker itself, on hand-made evidence: a perfect run scores zero, and each kind of
failure is counted where it happened (so a green fault suite means something)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from hub.store import AlertRecord, BroadcastRecord, ReceiptRecord
from tests.faults.checker import Evidence, Notified, Run, check, count_ids
from wire import Severity
from wire.replay import ExpectedAlert, GroundTruth, Incident

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
SIM0 = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
NOTIFIED = Notified(email=("c@x",), webhook=("committee",))
SPEAKERS = {"b1": ["speaker-b1"]}


def truth() -> GroundTruth:
    gas = Incident(
        id="gas_leak-1",
        kind="gas_leak",
        life_safety=True,
        site="f",
        building="b1",
        unit="101",
        start=SIM0 + timedelta(seconds=60),
        end=SIM0 + timedelta(seconds=200),
        expect=[
            ExpectedAlert(
                kind="gas",
                severity=Severity.EXTREME,
                device="gas-b1-101",
                unit="101",
                building="b1",
                latest=SIM0 + timedelta(seconds=120),
            )
        ],
    )
    return GroundTruth(
        scenario="t", seed=1, start=SIM0, end=SIM0 + timedelta(minutes=10), incidents=[gas]
    )


def alert(event_id: str, *, phase: str = "raised", at_s: float = 5.0) -> AlertRecord:
    return AlertRecord(
        id=event_id,
        key="gas-lel:gas-b1-101",
        phase=phase,
        severity="Extreme",
        kind="gas",
        rule="gas-lel",
        site="f",
        gateway="gw-b1",
        device="gas-b1-101",
        building="b1",
        unit="101",
        ts=T0 + timedelta(seconds=at_s),
        received_at=T0 + timedelta(seconds=at_s),
        evidence={},
        message="",
    )


def mail(incident: str) -> Message:
    message = Message()
    message["To"] = "c@x"
    message["X-Anmin-Incident"] = incident
    return message


def hook(incident: str) -> dict[str, Any]:
    return {"incident": {"id": incident}, "person": {"username": "committee"}}


def broadcast(cause: str, *, played: bool = True) -> BroadcastRecord:
    receipt = ReceiptRecord(
        broadcast_id="bc-1",
        speaker="speaker-b1",
        site="f",
        gateway="gw-b1",
        building="b1",
        outcome="played",
        content_hash="",
        detail="",
        ts=T0,
        received_at=T0,
    )
    return BroadcastRecord(
        id="bc-1",
        site="f",
        cause=cause,
        buildings=["b1"],
        severity="Extreme",
        headline="",
        text="",
        language="zh-CN",
        created_at=T0,
        expires=None,
        published_at=T0,
        payload=b"",
        receipts=(receipt,) if played else (),
    )


def perfect() -> Evidence:
    return Evidence(
        alerts=[alert("a1")],
        incidents=[],
        incident_of={"a1": "inc-1"},
        broadcasts=[broadcast("a1")],
        emails=[mail("inc-1")],
        webhooks=[hook("inc-1")],
        plays=[("speaker-b1", "bc-1")],
    )


def score(evidence: Evidence) -> tuple[int, int, int]:
    run = Run(truth(), speed=20.0, played_at=T0)  # latest = 120 s simulated = T0 + 6 s
    result = check("t", run, evidence, notified=NOTIFIED, speakers=SPEAKERS)
    assert result.expected == 1
    return result.lost, result.duplicated, result.late


def test_a_perfect_run_scores_zero() -> None:
    assert score(perfect()) == (0, 0, 0)


def test_a_missing_alert_is_lost() -> None:
    assert score(replace(perfect(), alerts=[])) == (1, 0, 0)


def test_a_too_mild_alert_does_not_count() -> None:
    mild = replace(alert("a1"), severity="Severe")
    assert score(replace(perfect(), alerts=[mild]))[0] == 1


def test_missing_notices_broadcasts_and_plays_are_lost() -> None:
    assert score(replace(perfect(), emails=[]))[0] == 1
    assert score(replace(perfect(), webhooks=[]))[0] == 1
    assert score(replace(perfect(), broadcasts=[]))[0] == 1
    assert score(replace(perfect(), broadcasts=[broadcast("a1", played=False)]))[0] == 1


def test_repeats_are_duplicates() -> None:
    twice = replace(perfect(), alerts=[alert("a1"), alert("a2", at_s=7)])
    assert score(replace(twice, incident_of={"a1": "inc-1", "a2": "inc-1"}))[1] == 1
    assert score(replace(twice, incident_of={"a1": "inc-1", "a2": "inc-2"}))[1] == 1
    assert score(replace(perfect(), emails=[mail("inc-1"), mail("inc-1")]))[1] == 1
    assert score(replace(perfect(), plays=[("speaker-b1", "bc-1")] * 3))[1] == 2
    # An update of the same alarm is not a second alarm.
    updated = replace(perfect(), alerts=[alert("a1"), alert("a2", phase="updated")])
    assert score(replace(updated, incident_of={"a1": "inc-1", "a2": "inc-1"})) == (0, 0, 0)


def test_an_alert_after_its_latest_plus_grace_is_late() -> None:
    # Due at T0 + 6 s (120 simulated seconds at 20x) + 10 s of grace.
    assert score(replace(perfect(), alerts=[alert("a1", at_s=15)]))[2] == 0
    assert score(replace(perfect(), alerts=[alert("a1", at_s=17)]))[2] == 1


def test_count_ids() -> None:
    result = count_ids("ids", {"a", "b"}, ["a", "a", "c"])
    assert (result.lost, result.duplicated) == (1, 1)
    assert result.line() == "ids: expected=2 lost=1 duplicated=1 late=0"
