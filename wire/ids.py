"""Event ids: UUIDv7 (RFC 9562), time-ordered so outboxes and stores sort by creation.

Python's ``uuid`` gains ``uuid7`` only in 3.14; these few lines avoid a dependency in ``wire``,
which may import only msgspec and the standard library.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable


def uuid7(unix_ms: int | None = None, random_bits: Callable[[int], int] = secrets.randbits) -> str:
    """A UUIDv7 string. Tests pass ``unix_ms`` and a seeded ``random_bits`` to be repeatable."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"unix_ms {ms} does not fit UUIDv7's 48-bit timestamp")
    rand_a = random_bits(12)
    rand_b = random_bits(62)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def uuid7_time_ms(event_id: str) -> int:
    """The creation time (Unix ms) inside a UUIDv7."""
    return uuid.UUID(event_id).int >> 80
