from __future__ import annotations

import random
from datetime import timedelta

import pytest

from hub.policy import BROADCAST_TTL, broadcast_for
from tests.unit.hub.helpers import NOW, gas_event
from wire import Codec, Phase, Severity
from wire.ids import uuid7_time_ms


def test_raised_extreme_gas_is_broadcast_to_its_building() -> None:
    event = gas_event()
    broadcast = broadcast_for(event, NOW)
    assert broadcast is not None
    assert broadcast.site == event.site
    assert broadcast.buildings == ["3"]
    assert broadcast.severity is Severity.EXTREME
    assert (broadcast.status, broadcast.msg_type, broadcast.language) == (
        "Actual",
        "Alert",
        "zh-CN",
    )
    assert broadcast.cause == event.id
    assert broadcast.ts == NOW
    assert broadcast.expires == NOW + BROADCAST_TTL == NOW + timedelta(hours=1)
    assert broadcast.repeat == 2
    assert "燃气泄漏" in broadcast.headline
    assert "3号楼" in broadcast.text and "不要使用明火" in broadcast.text
    assert uuid7_time_ms(broadcast.id) == int(NOW.timestamp() * 1000)


def test_broadcast_without_building_goes_to_the_whole_site() -> None:
    broadcast = broadcast_for(gas_event(building=None), NOW)
    assert broadcast is not None
    assert broadcast.buildings == []
    assert "号楼" not in broadcast.text


def test_broadcast_passes_the_wire_codec() -> None:
    broadcast = broadcast_for(gas_event(), NOW)
    assert broadcast is not None
    codec = Codec()
    assert codec.decode(codec.encode(broadcast), type(broadcast), NOW) == broadcast


def test_broadcast_id_is_repeatable_with_seeded_bits() -> None:
    one = broadcast_for(gas_event(), NOW, random_bits=random.Random(1).getrandbits)
    two = broadcast_for(gas_event(), NOW, random_bits=random.Random(1).getrandbits)
    assert one is not None and two is not None
    assert one.id == two.id


def test_an_escalation_to_extreme_is_broadcast() -> None:
    # A leak usually passes the low level first: the Extreme level arrives as an update.
    event = gas_event(severity=Severity.EXTREME, phase=Phase.UPDATED)
    assert broadcast_for(event, NOW) is not None


@pytest.mark.parametrize(
    ("severity", "phase", "kind"),
    [
        (Severity.SEVERE, Phase.RAISED, "gas"),
        (Severity.MODERATE, Phase.RAISED, "gas"),
        (Severity.SEVERE, Phase.UPDATED, "gas"),
        (Severity.EXTREME, Phase.CLEARED, "gas"),
        (Severity.SEVERE, Phase.RAISED, "smoke"),  # one detector: people first (issue 8)
        (Severity.EXTREME, Phase.RAISED, "fall"),
    ],
)
def test_other_events_are_not_broadcast(severity: Severity, phase: Phase, kind: str) -> None:
    assert broadcast_for(gas_event(severity=severity, phase=phase, kind=kind), NOW) is None
