"""The codec's limits: every kind of bad payload has its own reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from wire import (
    Ack,
    AlertEvent,
    Codec,
    Command,
    Limits,
    Phase,
    Reading,
    Reason,
    Severity,
    WireError,
)
from wire.ids import uuid7, uuid7_time_ms

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TS = b'"2026-11-28T12:00:00Z"'


def reading(values: bytes = b'{"gas_lel":1.5}', extra: bytes = b"") -> bytes:
    return b'{"device":"gas-1","seq":1,"ts":' + TS + b',"values":' + values + extra + b"}"


BAD_READINGS: dict[str, tuple[bytes, Reason]] = {
    "empty": (b"", Reason.EMPTY_PAYLOAD),
    "oversize": (b" " * 70_000, Reason.PAYLOAD_TOO_LARGE),
    "not utf-8": (b'{"device":"g\xff"}', Reason.NOT_UTF8),
    "bad json": (b'{"device":', Reason.MALFORMED_JSON),
    "NaN": (reading(b'{"gas_lel":NaN}'), Reason.NON_FINITE_NUMBER),
    "Infinity": (reading(b'{"gas_lel":-Infinity}'), Reason.NON_FINITE_NUMBER),
    "overflow": (reading(b'{"gas_lel":1e999}'), Reason.NON_FINITE_NUMBER),
    "scalar": (b"42", Reason.NOT_AN_OBJECT),
    "missing field": (b'{"device":"gas-1","ts":' + TS + b',"values":{}}', Reason.MISSING_FIELD),
    "wrong type": (reading(b'{"gas_lel":"high"}'), Reason.WRONG_TYPE),
    "bool for int": (
        b'{"device":"gas-1","seq":true,"ts":' + TS + b',"values":{}}',
        Reason.WRONG_TYPE,
    ),
    "negative seq": (
        b'{"device":"gas-1","seq":-1,"ts":' + TS + b',"values":{}}',
        Reason.VALUE_OUT_OF_RANGE,
    ),
    "long id": (
        b'{"device":"' + b"a" * 100 + b'","seq":1,"ts":' + TS + b',"values":{}}',
        Reason.STRING_TOO_LONG,
    ),
    "too many values": (
        reading(b"{" + b",".join(b'"m%d":1' % i for i in range(40)) + b"}"),
        Reason.TOO_MANY_ITEMS,
    ),
    "batch too big": (b"[" + b",".join([reading()] * 65) + b"]", Reason.TOO_MANY_ITEMS),
    # too short is not too long (both were "of length")
    "empty batch": (b"[]", Reason.INVALID_VALUE),
    "empty id": (b'{"device":"","seq":1,"ts":' + TS + b',"values":{}}', Reason.INVALID_VALUE),
    "empty metric name": (reading(b'{"":1}'), Reason.INVALID_VALUE),
    "bad timestamp": (
        b'{"device":"gas-1","seq":1,"ts":"yesterday","values":{}}',
        Reason.INVALID_VALUE,
    ),
    "naive timestamp": (
        b'{"device":"gas-1","seq":1,"ts":"2026-11-28T12:00:00","values":{}}',
        Reason.INVALID_VALUE,
    ),
    "future": (
        b'{"device":"gas-1","seq":1,"ts":"2027-01-01T00:00:00Z","values":{}}',
        Reason.TIMESTAMP_IN_FUTURE,
    ),
    "too old": (
        b'{"device":"gas-1","seq":1,"ts":"2020-01-01T00:00:00Z","values":{}}',
        Reason.TIMESTAMP_TOO_OLD,
    ),
    "newer schema": (
        b'{"v":2,"device":"gas-1","seq":1,"ts":' + TS + b',"vals":{}}',
        Reason.UNSUPPORTED_VERSION,
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_READINGS))
def test_each_bad_reading_has_its_reason(name: str) -> None:
    payload, reason = BAD_READINGS[name]
    with pytest.raises(WireError) as caught:
        Codec().decode_readings(payload, NOW)
    assert caught.value.reason is reason, caught.value.detail
    assert caught.value.detail


def test_good_readings_single_and_batch() -> None:
    codec = Codec()
    [one] = codec.decode_readings(reading(), NOW)
    assert one.values == {"gas_lel": 1.5}
    assert one.ts == NOW
    batch = codec.decode_readings(b"[" + reading() + b"," + reading() + b"]", NOW)
    assert len(batch) == 2


def test_readings_tolerate_unknown_fields_from_newer_firmware() -> None:
    [one] = Codec().decode_readings(reading(extra=b',"rssi":-70'), NOW)
    assert one.device == "gas-1"


def test_strict_models_reject_unknown_fields() -> None:
    ack = Ack(ids=[uuid7()], ts=NOW)
    payload = msgspec.json.encode(ack)[:-1] + b',"also":1}'
    with pytest.raises(WireError) as caught:
        Codec().decode(payload, Ack, NOW)
    assert caught.value.reason is Reason.UNKNOWN_FIELD


def test_round_trip_of_an_alert_event() -> None:
    codec = Codec()
    event = AlertEvent(
        id=uuid7(),
        key="gas-lel:gas-1",
        phase=Phase.RAISED,
        severity=Severity.EXTREME,
        kind="gas",
        rule="gas-lel",
        site="s1",
        gateway="gw-1",
        device="gas-1",
        ts=NOW,
        evidence={"gas_lel": 30.0},
    )
    assert codec.decode(codec.encode(event), AlertEvent, NOW) == event


def test_encode_refuses_nan_which_json_would_turn_into_null() -> None:
    bad = Reading(device="gas-1", seq=1, ts=NOW, values={"gas_lel": float("nan")})
    with pytest.raises(WireError) as caught:
        Codec().encode(bad)
    assert caught.value.reason is Reason.NON_FINITE_NUMBER


def test_command_is_strict_about_its_action() -> None:
    payload = (
        b'{"id":"' + uuid7().encode() + b'","device":"gas-1","action":"explode","ts":' + TS + b"}"
    )
    with pytest.raises(WireError) as caught:
        Codec().decode(payload, Command, NOW)
    assert caught.value.reason is Reason.INVALID_VALUE


def test_limits_are_configurable() -> None:
    codec = Codec(Limits(max_payload_bytes=50, max_future=timedelta(0)))
    with pytest.raises(WireError) as caught:
        codec.decode_readings(reading(), NOW)
    assert caught.value.reason is Reason.PAYLOAD_TOO_LARGE


def test_uuid7_is_time_ordered_and_repeatable() -> None:
    import random

    first = uuid7(1_700_000_000_000, random.Random(1).getrandbits)
    again = uuid7(1_700_000_000_000, random.Random(1).getrandbits)
    later = uuid7(1_700_000_000_001, random.Random(1).getrandbits)
    assert first == again
    assert first < later
    assert uuid7_time_ms(first) == 1_700_000_000_000
    assert first[14] == "7"


def test_deeply_nested_json_is_rejected_not_crashed() -> None:
    nested = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    payload = reading(extra=b',"x":' + nested)
    with pytest.raises(WireError) as caught:
        Codec(Limits(max_payload_bytes=200_000)).decode_readings(payload, NOW)
    assert caught.value.reason is Reason.NESTED_TOO_DEEP


def test_control_messages_may_skip_the_clock_window() -> None:
    codec = Codec()
    skewed = Ack(ids=[uuid7()], ts=NOW + timedelta(days=1))
    payload = codec.encode(skewed)
    with pytest.raises(WireError):
        codec.decode(payload, Ack, NOW)
    assert codec.decode(payload, Ack, NOW, check_time=False) == skewed
