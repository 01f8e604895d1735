"""When the hub broadcasts on its own: a pure decision from an alert event and the time."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from wire import AlertEvent, Broadcast, Phase, Severity, uuid7

# An automatic warning is stale after an hour; by then people on site have taken over.
BROADCAST_TTL = timedelta(hours=1)
# Spoken twice: a single announcement is easily missed over a running tap or a TV.
BROADCAST_REPEAT = 2

GAS_HEADLINE = "燃气泄漏紧急警报"
GAS_TEXT = (
    "紧急通知：{place}检测到燃气泄漏。请立即打开门窗，不要开关电器，不要使用明火，迅速离开大楼。"
)

Policy = Callable[[AlertEvent, datetime], Broadcast | None]


def broadcast_for(
    event: AlertEvent,
    now: datetime,
    *,
    random_bits: Callable[[int], int] = secrets.randbits,
) -> Broadcast | None:
    """The broadcast an alert event calls for, or None.

    Only an Extreme gas alarm is broadcast automatically, whether it is raised at that level or
    escalates to it: it is the one alert where every resident of the building must act at once.
    Everything else goes to people first. The store keeps it to one broadcast per alarm.
    """
    if not (
        event.kind == "gas"
        and event.severity is Severity.EXTREME
        and event.phase in (Phase.RAISED, Phase.UPDATED)
    ):
        return None
    place = f"{event.building}号楼" if event.building else "本小区"
    return Broadcast(
        id=uuid7(int(now.timestamp() * 1000), random_bits),
        site=event.site,
        ts=now,
        status="Actual",
        msg_type="Alert",
        severity=Severity.EXTREME,
        headline=GAS_HEADLINE,
        text=GAS_TEXT.format(place=place),
        language="zh-CN",
        buildings=[event.building] if event.building else [],
        repeat=BROADCAST_REPEAT,
        expires=now + BROADCAST_TTL,
        cause=event.id,
    )
