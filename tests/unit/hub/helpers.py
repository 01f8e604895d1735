"""Builders for the hub's unit tests: events, receipts and a fixed clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from wire import AlertEvent, Phase, Receipt, Severity, uuid7

NOW = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
_random = random.Random(7)


def event_id(at: datetime = NOW) -> str:
    return uuid7(int(at.timestamp() * 1000), _random.getrandbits)


def gas_event(
    *,
    severity: Severity = Severity.EXTREME,
    phase: Phase = Phase.RAISED,
    kind: str = "gas",
    building: str | None = "3",
    at: datetime = NOW,
    site: str = "s1",
    gateway: str = "g1",
) -> AlertEvent:
    return AlertEvent(
        id=event_id(at),
        key=f"gas_high:{site}/{gateway}/kitchen-1",
        phase=phase,
        severity=severity,
        kind=kind,
        rule="gas_high",
        site=site,
        gateway=gateway,
        device="kitchen-1",
        building=building,
        unit="301",
        ts=at,
        evidence={"gas_lel": 42.0},
        message="LEL 42%",
    )


def receipt(broadcast_id: str, *, speaker: str = "spk-1", at: datetime = NOW) -> Receipt:
    return Receipt(
        broadcast_id=broadcast_id,
        speaker=speaker,
        outcome="played",
        ts=at + timedelta(seconds=2),
        content_hash="a" * 64,
        building="3",
    )
