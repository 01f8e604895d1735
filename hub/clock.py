"""Where the hub's time comes from: injected, so that tests can pin it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, UTC and timezone-aware (the wire rejects naive timestamps)."""
    return datetime.now(UTC)
