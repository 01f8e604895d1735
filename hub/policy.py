"""When the hub broadcasts on its own: a pure decision from an alert event and the time.

A confirmed fire and an Extreme gas alarm warn the building at once, with CAP 1.2 attached
(``wire.cap.with_cap``): the one kind of alert where every resident must act without waiting
for a person. Everything else goes to people first. The store keeps it to one broadcast per
alarm (an alarm that escalates, or whose event arrives twice, is broadcast once).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from wire import AlertEvent, Broadcast, Phase, Severity, cap, uuid7

# An automatic warning is stale after an hour; by then people on site have taken over.
BROADCAST_TTL = timedelta(hours=1)
# Spoken twice: a single announcement is easily missed over a running tap or a TV.
BROADCAST_REPEAT = 2

GAS_HEADLINE = "燃气泄漏紧急警报"
GAS_TEXT = (
    "紧急通知：{place}检测到燃气泄漏。请立即打开门窗，不要开关电器，不要使用明火，迅速离开大楼。"
)
FIRE_HEADLINE = "火灾紧急警报"
FIRE_TEXT = "紧急通知：{place}发生火灾。请立即从楼梯撤离，不要乘坐电梯。"

Policy = Callable[[AlertEvent, datetime], Broadcast | None]


def sender_for(site: str) -> str:
    """The CAP sender of a site's broadcasts (no spaces, commas, < or &: site ids have none)."""
    return f"anmin@{site}"


@dataclass(frozen=True, slots=True)
class Warning:
    headline: str
    text: str
    event: str
    category: cap.Category
    en_headline: str
    en_text: str
    en_event: str
    instruction: str
    en_instruction: str


GAS = Warning(
    headline=GAS_HEADLINE,
    text=GAS_TEXT,
    event="燃气泄漏",
    category="Safety",
    en_headline="Gas leak: leave the building",
    en_text="Emergency: a gas leak was detected in {place_en}. Open the windows, do not touch "
    "switches, no open flames, leave the building now.",
    en_event="Gas leak",
    instruction="",
    en_instruction="",
)
FIRE = Warning(
    headline=FIRE_HEADLINE,
    text=FIRE_TEXT,
    event="火灾",
    category="Fire",
    en_headline="Fire: leave the building by the stairs",
    en_text="Emergency: fire in {place_en}. Leave the building by the stairs now; do not use "
    "the lifts.",
    en_event="Fire",
    instruction="",
    en_instruction="",
)

# Kinds from rules/presets/*.yaml. "fire" is the confirmed fire (smoke plus heat or CO in the
# same unit: Extreme); a single smoke or heat detector (Severe in the presets) goes to people
# first, and warns the building only if a site's own rule raises it to Extreme.
FIRE_KINDS = frozenset({"fire"})
FIRE_SEVERITIES = frozenset({Severity.EXTREME, Severity.SEVERE})
DETECTOR_KINDS = frozenset({"smoke", "heat"})


def warning_for(event: AlertEvent) -> Warning | None:
    """Which warning an alert event calls for, if any."""
    if event.phase not in (Phase.RAISED, Phase.UPDATED):
        return None
    if event.kind == "gas" and event.severity is Severity.EXTREME:
        return GAS
    if event.kind in FIRE_KINDS and event.severity in FIRE_SEVERITIES:
        return FIRE
    if event.kind in DETECTOR_KINDS and event.severity is Severity.EXTREME:
        return FIRE
    return None


def broadcast_for(
    event: AlertEvent,
    now: datetime,
    *,
    random_bits: Callable[[int], int] = secrets.randbits,
) -> Broadcast | None:
    """The broadcast an alert event calls for (with its CAP 1.2), or None."""
    warning = warning_for(event)
    if warning is None:
        return None
    place = f"{event.building}号楼" if event.building else "本小区"
    place_en = f"building {event.building}" if event.building else "the community"
    buildings = [event.building] if event.building else []
    broadcast = Broadcast(
        id=uuid7(int(now.timestamp() * 1000), random_bits),
        site=event.site,
        ts=now,
        status="Actual",
        msg_type="Alert",
        severity=Severity.EXTREME if warning is GAS else event.severity,
        headline=warning.headline,
        text=warning.text.format(place=place),
        language="zh-CN",
        buildings=buildings,
        repeat=BROADCAST_REPEAT,
        expires=now + BROADCAST_TTL,
        cause=event.id,
    )
    fields = cap.CapFields(
        sender=sender_for(event.site),
        event=warning.event,
        area=cap.Area(place, buildings=tuple(buildings)),
        category=warning.category,
        urgency="Immediate",
        certainty="Observed",
        instruction=warning.instruction,
        translations=(
            cap.InfoText(
                "en-US",
                warning.en_headline,
                warning.en_text.format(place_en=place_en),
                warning.en_instruction,
                event=warning.en_event,
                area_description=place_en,
            ),
        ),
    )
    return cap.with_cap(broadcast, fields)
