"""A change in an alert's life: what the rules hand to the edge, which makes an ``AlertEvent``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rules.language import Action
from wire.models import Phase, Severity


@dataclass(frozen=True, slots=True)
class Transition:
    """Raised, updated (escalated) or cleared; ``key`` names the alert (rule and scope)."""

    phase: Phase
    severity: Severity
    rule: str
    kind: str
    at: datetime
    evidence: dict[str, float]
    message: str
    scope: str = "device"  # device, unit, building or resident
    key: str = ""  # the scope's key: a device id, "building/unit", a building, a resident
    device: str | None = None  # the device whose reading decided it, if one did
    building: str | None = None
    unit: str | None = None
    resident: str | None = None
    actions: tuple[Action, ...] = ()  # to do now (raised / escalated); none on clear
    life_safety: bool = False

    @property
    def alert_key(self) -> str:
        """The same for every event of one alert: ``rule:scope-key``."""
        return f"{self.rule}:{self.key or self.device or ''}"
