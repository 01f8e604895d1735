"""Why the wire rejects a message: one machine-readable reason per kind of fault."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Machine-readable rejection reasons; they label counters and dead letters."""

    EMPTY_PAYLOAD = "empty_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NESTED_TOO_DEEP = "nested_too_deep"
    NON_FINITE_NUMBER = "non_finite_number"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_FIELD = "unknown_field"
    STRING_TOO_LONG = "string_too_long"
    TOO_MANY_ITEMS = "too_many_items"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED_VERSION = "unsupported_version"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    BAD_TOPIC = "bad_topic"
    DEVICE_MISMATCH = "device_mismatch"
    SITE_MISMATCH = "site_mismatch"  # a payload naming another site than its topic's
    RETAINED = "retained"  # a retained copy of what is never published retained (a replay)
    # Reasons the edge decides with state the codec does not have.
    UNKNOWN_DEVICE = "unknown_device"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"


class WireError(Exception):
    """A message that does not meet the wire contract."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def shown(value: object, limit: int = 60) -> str:
    """``value``'s repr for an error's detail, cut to ``limit`` characters: a letter keeps
    256, and a long junk value must not push out what the detail says is wrong with it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
