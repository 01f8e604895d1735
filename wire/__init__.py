"""The language between Anmin's processes: topics, versioned payloads and their codec.

Imports only msgspec and the standard library, so every process (even a small gateway) can use it.
"""

from wire import topics
from wire.codec import Codec, Limits
from wire.errors import Reason, WireError
from wire.ids import uuid7
from wire.models import (
    Ack,
    AlertEvent,
    Broadcast,
    Command,
    DeadLetter,
    DeviceStatus,
    Heartbeat,
    Phase,
    Reading,
    Receipt,
    Severity,
)

__all__ = [
    "Ack",
    "AlertEvent",
    "Broadcast",
    "Codec",
    "Command",
    "DeadLetter",
    "DeviceStatus",
    "Heartbeat",
    "Limits",
    "Phase",
    "Reading",
    "Reason",
    "Receipt",
    "Severity",
    "WireError",
    "topics",
    "uuid7",
]
